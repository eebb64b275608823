"""Readiness probe from inside a network namespace, without spawning a process.

A short-lived thread joins the namespace with setns(2) (per thread on Linux) and does one HTTP GET.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000


def _get_in_ns(ns: str, ip: str, port: int, timeout: float, result: list[bool]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            return
    finally:
        os.close(fd)
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            result.append(s.recv(64).startswith(b"HTTP/1.1 200"))
    except OSError:
        result.append(False)


def http_ready(ns: str, ip: str, port: int, timeout: float = 0.5) -> bool:
    """True when ``http://ip:port/`` answers 200 from inside ``ns``."""
    result: list[bool] = []
    worker = threading.Thread(target=_get_in_ns, args=(ns, ip, port, timeout, result), daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    return bool(result and result[0])
