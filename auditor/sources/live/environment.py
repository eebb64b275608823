"""Everything bcc needs before it is imported: kernel headers, tracefs, BTF.

bcc compiles the probes against kernel headers found at ``/lib/modules/$(uname -r)/build``. When
that is missing (a node or CI image whose headers package is for another kernel), we point
``BCC_KERNEL_SOURCE`` at the closest installed ``/usr/src/linux-headers-*`` tree. Debian splits a
tree into ``-common`` (sources) and ``-<arch>`` (generated headers, .config): bcc takes the first
as the kernel source and the second comes in through ``-I`` flags. The probes read kernel memory
only at offsets taken from the running kernel (tracefs formats, BTF), so headers for another
version are fine: they only provide types and macros.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from auditor.sources.live.btf import VMLINUX_BTF
from auditor.sources.live.tracefs import find_tracefs

_ARCH = {"x86_64": "x86", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "powerpc", "s390x": "s390"}

# For ``python -c``: imports bcc in a child interpreter and prints its version and location (what
# ``auditor doctor`` runs, so a broken libbcc cannot hurt the caller; only this package names bcc).
BCC_IMPORT_CHECK = "import bcc, bcc.version; print(bcc.version.__version__, bcc.__file__)"


@dataclass(slots=True)
class BccEnvironment:
    """What :func:`prepare_bcc_environment` found and chose (also shown by ``auditor doctor``)."""

    kernel_release: str
    headers: str  # "modules" | "BCC_KERNEL_SOURCE (preset)" | "BCC_KERNEL_SOURCE=<dir>" | "missing"
    kernel_source: Path | None
    extra_cflags: list[str] = field(default_factory=list)
    tracefs: Path | None = None
    btf: bool = False
    ringbuf: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.headers != "missing" and self.tracefs is not None and self.btf


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:4])


def kernel_supports_ringbuf(release: str) -> bool:
    """BPF ring buffers arrived in Linux 5.8."""
    return _version_key(release)[:2] >= (5, 8)


def pick_headers(release: str, machine: str, src: Path = Path("/usr/src")) -> tuple[Path, list[str]] | None:
    """The kernel source dir and extra -I flags for the installed headers closest to ``release``."""
    arch = _ARCH.get(machine, machine)
    trees = [p for p in src.glob("linux-headers-*") if (p / "include").is_dir() and (p / ".config").is_file()]
    if not trees:
        return None
    want = _version_key(release)

    def distance(p: Path) -> tuple[int, ...]:
        have = _version_key(p.name.removeprefix("linux-headers-"))
        return tuple(abs(a - b) for a, b in zip(want[:2], have[:2], strict=False)) + tuple(-n for n in have)

    build = min(trees, key=distance)
    # Debian/Ubuntu split trees: <name>-<flavour> (generated) next to <name>-common / <name> (sources)
    stem = build.name.rsplit("-", 1)[0]
    source = next(
        (p for p in (src / f"{stem}-common", src / stem) if (p / "include" / "linux").is_dir()), None
    )
    if source is None or source == build:
        return build, []
    return source, _generated_cflags(build, arch)


def _generated_cflags(build: Path, arch: str) -> list[str]:
    return [
        f"-I{build}/include",
        f"-I{build}/arch/{arch}/include/generated",
        f"-I{build}/arch/{arch}/include/generated/uapi",
        f"-I{build}/include/generated/uapi",
    ]


def split_tree_cflags(source: Path, machine: str) -> list[str]:
    """For a sources-only tree (``...-common``), -I flags to its generated sibling (``...-amd64``)."""
    if (source / "include" / "generated").is_dir():
        return []
    stem = source.name.removesuffix("-common")
    for sibling in sorted(source.parent.glob(f"{stem}-*")):
        if sibling != source and (sibling / "include" / "generated").is_dir():
            return _generated_cflags(sibling, _ARCH.get(machine, machine))
    return []


def prepare_bcc_environment(mount_tracefs: bool = True) -> BccEnvironment:
    """Set up (and report) headers, tracefs and BTF for bcc; call before ``import bcc``."""
    release, machine = platform.release(), platform.machine()
    env = BccEnvironment(kernel_release=release, headers="missing", kernel_source=None)
    modules = Path("/lib/modules") / release / "build"
    preset = os.environ.get("BCC_KERNEL_SOURCE")
    if modules.is_dir():
        env.headers, env.kernel_source = "modules", modules
    elif preset:
        env.headers, env.kernel_source = "BCC_KERNEL_SOURCE (preset)", Path(preset)
        env.extra_cflags = split_tree_cflags(Path(preset), machine)
    else:
        picked = pick_headers(release, machine)
        if picked is None:
            env.notes.append(f"no kernel headers: install linux-headers for {release} (or any version)")
        else:
            env.kernel_source, env.extra_cflags = picked
            os.environ["BCC_KERNEL_SOURCE"] = str(env.kernel_source)
            env.headers = f"BCC_KERNEL_SOURCE={env.kernel_source}"
            env.notes.append(f"headers for {release} missing; using {env.kernel_source.name}")
    env.tracefs = find_tracefs(mount_if_missing=mount_tracefs and os.geteuid() == 0)
    if env.tracefs is None:
        env.notes.append("tracefs not mounted: mount -t tracefs tracefs /sys/kernel/tracing")
    env.btf = VMLINUX_BTF.is_file()
    if not env.btf:
        env.notes.append("no /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF")
    env.ringbuf = kernel_supports_ringbuf(release)
    return env
