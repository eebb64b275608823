"""Read and delete entries of a BPF hash map in bulk, as raw bytes (for the pure decoders).

``BPF_MAP_LOOKUP_BATCH`` / ``BPF_MAP_DELETE_BATCH`` (kernels >= 5.6) move many entries per syscall;
where the kernel (or the map type) refuses them, the reader falls back to walking the keys
(``BPF_MAP_GET_NEXT_KEY`` + ``BPF_MAP_LOOKUP_ELEM``) and deleting one by one, bounded by the map's
size. The buffers are allocated once, for ``max_entries``.

Only :mod:`auditor.sources.live` imports bcc; this module takes bcc's table object and its ``lib``.
"""

from __future__ import annotations

import ctypes
import errno
from typing import Any


class MapReader:
    """Bulk access to one hash map (``table``: a bcc table; per-CPU values come as ``ncpus`` slots)."""

    def __init__(self, table: Any, lib: Any | None = None) -> None:
        if lib is None:
            from bcc.libbcc import lib as bcc_lib  # lazily: only this package imports bcc

            lib = bcc_lib
        self.lib = lib
        self.fd = int(table.map_fd)
        self.max_entries = int(table.max_entries)
        self.key_size = ctypes.sizeof(table.Key)
        self.value_size = ctypes.sizeof(table.Leaf)  # per-CPU maps: the slots of every possible CPU
        self._keys = ctypes.create_string_buffer(self.key_size * self.max_entries)
        self._values = ctypes.create_string_buffer(self.value_size * self.max_entries)
        self.batch = True  # False once the kernel refused a batch operation
        self.errors = 0

    def lookup_all(self) -> tuple[bytes, bytes]:
        """Every entry: (keys back to back, values back to back)."""
        if self.batch:
            try:
                return self._lookup_batch()
            except _Unsupported:
                self.batch = False
        return self._lookup_walk()

    def delete(self, keys: bytes) -> int:
        """Delete the entries of ``keys`` (back to back); returns how many went."""
        n = len(keys) // self.key_size
        if n == 0:
            return 0
        if self.batch:
            buf = ctypes.create_string_buffer(keys, len(keys))
            count = ctypes.c_uint32(n)
            rc = self.lib.bpf_delete_batch(self.fd, buf, ctypes.byref(count))
            if rc == 0:
                return n
            err = ctypes.get_errno()
            if err not in _UNSUPPORTED:
                self.errors += 1  # e.g. ENOENT: a key already gone; delete the rest one by one
            else:
                self.batch = False
        deleted = 0
        for i in range(n):
            key = ctypes.create_string_buffer(
                keys[i * self.key_size : (i + 1) * self.key_size], self.key_size
            )
            if self.lib.bpf_delete_elem(self.fd, key) == 0:
                deleted += 1
        return deleted

    def _lookup_batch(self) -> tuple[bytes, bytes]:
        token = ctypes.c_uint32(0)
        total = 0
        for _ in range(self.max_entries + 1):  # each call makes progress or ends; bounded anyway
            count = ctypes.c_uint32(self.max_entries - total)
            rc = self.lib.bpf_lookup_batch(
                self.fd,
                ctypes.byref(token) if total else None,
                ctypes.byref(token),
                ctypes.byref(self._keys, self.key_size * total),
                ctypes.byref(self._values, self.value_size * total),
                ctypes.byref(count),
            )
            err = ctypes.get_errno() if rc != 0 else 0
            total += count.value
            if rc != 0:
                if err == errno.ENOENT:
                    break  # the whole map was walked
                if err in _UNSUPPORTED and total == 0:
                    raise _Unsupported
                self.errors += 1
                break
            if total >= self.max_entries or count.value == 0:
                break
        return self._keys.raw[: total * self.key_size], self._values.raw[: total * self.value_size]

    def _lookup_walk(self) -> tuple[bytes, bytes]:
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        value = ctypes.create_string_buffer(self.value_size)
        keys, values = bytearray(), bytearray()
        first = True
        for _ in range(self.max_entries):
            if self.lib.bpf_get_next_key(self.fd, None if first else key, nxt) != 0:
                break
            first = False
            ctypes.memmove(key, nxt, self.key_size)
            if self.lib.bpf_lookup_elem(self.fd, key, value) == 0:  # gone meanwhile: skip it
                keys += key.raw
                values += value.raw
        return bytes(keys), bytes(values)


class _Unsupported(Exception):
    pass


_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM)

__all__ = ["MapReader"]
