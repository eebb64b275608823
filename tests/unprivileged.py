"""Run a command as an unprivileged user: what a laptop user of ``auditor record --kube-only`` is.

As root, the child drops to ``nobody``/``nogroup`` (``os.setgroups([])``, ``os.setgid``, ``os.setuid``)
before it executes, and works in a directory that user owns; as any other user it runs as that user (it is
unprivileged already).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

USER = "nobody"


def ids() -> tuple[int, int]:
    """The uid and gid the child runs as."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    uid = pwd.getpwnam(USER).pw_uid
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        gid = pwd.getpwnam(USER).pw_gid
    return uid, gid


def demote() -> Callable[[], None] | None:
    """A ``preexec_fn`` dropping root to ``nobody`` (None when not root)."""
    if os.geteuid() != 0:
        return None
    uid, gid = ids()

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return drop


def env(home: Path) -> dict[str, str]:
    """A clean environment for the child: no KUBECONFIG, no root's HOME."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "AUDITOR_DEBUG")}
    return keep | {"HOME": str(home), "USER": USER}


@contextmanager
def owned_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp the unprivileged user owns (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        uid, gid = ids()
        os.chown(path, uid, gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def give(path: Path) -> Path:
    """Hand a file to the unprivileged user (e.g. a kubeconfig written by root)."""
    uid, gid = ids()
    os.chown(path, uid, gid)
    return path
