"""The pod's container: a threaded HTTP/1.1 keep-alive server that drains on SIGTERM.

On SIGTERM it closes its listener at once (new SYNs then get RST: connection refused), answers
requests already received, closes idle keep-alive connections (unless ``--keep-idle``: a server
that ignores them), and after ``--drain`` seconds aborts what is left (SO_LINGER 0 -> RST) and exits. Ground-truth times go to ``--events`` as JSON lines
(``time.time_ns()``): listening, sigterm, listener_closed, exit.

Run: ``python -m tests.lab.server --port 8080 --events /tmp/pod.jsonl --name web-1``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

POLL_S = 0.02  # idle connections notice the drain within this
MAX_HEAD = 16384


class Pod:
    """Listener, live connections and the event log of one server process."""

    def __init__(self, port: int, name: str, events: Path | None, drain_s: float,
                 host: str = "0.0.0.0", close_idle: bool = True) -> None:
        self.host, self.port, self.name, self.events_path, self.drain_s = host, port, name, events, drain_s
        self.close_idle = close_idle  # False: keep serving kept-alive connections until the abort
        self.draining = threading.Event()
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.served = 0

    def log(self, event: str, **extra: Any) -> None:
        row = {"event": event, "time_ns": time.time_ns(), "pod": self.name, **extra}
        if self.events_path:
            with self.events_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def handle(self, conn: socket.socket) -> None:
        """Serve requests on one connection until the client closes, asks to close, or we drain."""
        conn.settimeout(POLL_S)
        buf = b""
        try:
            while True:
                if b"\r\n\r\n" not in buf:
                    if self.close_idle and self.draining.is_set() and not buf:
                        return  # idle keep-alive connection: close it (FIN)
                    try:
                        chunk = conn.recv(4096)
                    except TimeoutError:
                        continue
                    if not chunk or len(buf) > MAX_HEAD:
                        return
                    buf += chunk
                    continue
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
                close = headers.get("connection", "").lower() == "close" or lines[0].endswith("HTTP/1.0")
                close = close or (self.close_idle and self.draining.is_set())
                body = f"{self.name}\n".encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"Connection: close\r\n" if close else b"")
                    + b"\r\n" + body
                )
                with self.lock:
                    self.served += 1
                if close:
                    return
        except OSError:
            return
        finally:
            with self.lock:
                self.conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGTERM, lambda *_: None)
        listener = socket.create_server((self.host, self.port), backlog=1024)
        self.port = listener.getsockname()[1]
        listener.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "signal")
        self.log("listening", port=self.port)
        while not self.draining.is_set():
            for key, _ in sel.select(timeout=1.0):
                if key.data == "signal":
                    self.log("sigterm")
                    sel.unregister(listener)
                    listener.close()
                    self.log("listener_closed")
                    self.draining.set()
                    break
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                with self.lock:
                    self.conns.add(conn)
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline:
            with self.lock:
                if not self.conns:
                    break
            time.sleep(POLL_S)
        with self.lock:
            left = list(self.conns)
        for conn in left:  # drain timeout: linger 0, so the close at process exit sends RST
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.log("exit", served=self.served, aborted=len(left))
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.server", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port (logged)")
    parser.add_argument("--name", default="web")
    parser.add_argument("--events", type=Path, default=None)
    parser.add_argument("--drain", type=float, default=5.0, help="seconds before aborting connections")
    parser.add_argument("--keep-idle", action="store_true",
                        help="on SIGTERM do not close kept-alive connections: they are aborted after --drain")
    args = parser.parse_args(argv)
    return Pod(args.port, args.name, args.events, args.drain, args.host, not args.keep_idle).run()


if __name__ == "__main__":
    sys.exit(main())
