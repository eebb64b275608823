"""The pod proxy subresource for :class:`~tests.kubeserver.server.FakeApiServer`.

``GET /api/v1/namespaces/<ns>/pods/<pod>[:<port>]/proxy/<path>`` is forwarded to a local HTTP server
registered for that pod, as kube-apiserver forwards to the pod's IP: the path is percent-decoded first
(the Python client encodes ``:`` and ``/`` in path parameters; the API server decodes them), the query
and the request headers go along, except ``Authorization`` (kube-apiserver's authentication filter
deletes it once it has authenticated the caller), the front-proxy identity headers (``X-Remote-*``),
``Impersonate-*`` and hop-by-hop headers, the answer's status, Content-Type, ``WWW-Authenticate`` and
body are relayed (streamed), and a pod whose server does not answer gets ``503`` with a Status
``error trying to reach service: ... connection refused``, like the real one.

Pod lists also honour an equality ``labelSelector`` (the base server ignores selectors).

Plugs into the existing server without editing it: :class:`ProxyApiServer` swaps in a handler class
that answers proxy paths and leaves every other request to the original handler.
"""

from __future__ import annotations

import http.client
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.kubeserver.server import FakeApiServer

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
               "transfer-encoding", "upgrade", "host", "content-length"}  # fmt: skip
_PROXY = re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<target>[^/]+)/proxy(?P<path>/.*)?")


class ProxyApiServer(FakeApiServer):
    """A FakeApiServer whose pods can be reached through ``pods/proxy``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.proxied: list[str] = []  # decoded proxy paths, for tests
        self._targets: dict[tuple[str, str, int], int] = {}  # (ns, pod, port) -> local port
        base = self._httpd.RequestHandlerClass
        owner = self

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                m = _PROXY.fullmatch(unquote(parts.path))
                selector = parse_qs(parts.query).get("labelSelector", [""])[-1]
                if m is None and selector and "watch=" not in parts.query:
                    owner._list_selected(self, unquote(parts.path), selector)
                    return
                if m is None:
                    super().do_GET()
                    return
                owner._forward(self, m.group("ns"), m.group("target"), m.group("path") or "/")

        self._httpd.RequestHandlerClass = Handler

    def add_agent_pod(
        self, name: str, node: str, local_port: int, *, namespace: str = "auditor", port: int = 9808,
        phase: str = "Running", labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A pod on ``node`` whose ``port`` is served by 127.0.0.1:``local_port``."""
        self._targets[(namespace, name, port)] = local_port
        return self.create({
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": labels or {"app.kubernetes.io/name": "auditor"}},
            "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "auditor-agent"}]},
            "status": {"phase": phase, "podIP": "127.0.0.1"},
        })  # fmt: skip

    def _list_selected(self, handler: Any, path: str, selector: str) -> None:
        """A pod list filtered by an equality selector (``k=v,k2=v2``), which the base server ignores."""
        failure = self._take_failure()
        if failure is not None:
            handler._send_json(failure, _status(failure, "InternalError", "injected failure"))
            return
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
        if m is None:
            handler._send_json(400, _status(400, "BadRequest", "labelSelector: only namespaced pod lists"))
            return
        want = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
        body = self._list("pods", m.group(1), 0, "")
        assert body is not None
        labels = lambda item: item["metadata"].get("labels") or {}  # noqa: E731
        body["items"] = [i for i in body["items"] if all(labels(i).get(k) == v for k, v in want.items())]
        handler._send_json(200, body)

    def _forward(self, handler: Any, ns: str, target: str, path: str) -> None:
        self.proxied.append(path)
        pod, _, port_text = target.partition(":")
        port = int(port_text) if port_text.isdigit() else 80
        if self.get("Pod", ns, pod) is None:
            handler._send_json(404, _status(404, "NotFound", f'pods "{pod}" not found'))
            return
        local = self._targets.get((ns, pod, port))
        query = urlsplit(handler.path).query
        conn = http.client.HTTPConnection("127.0.0.1", local or 1, timeout=10)
        try:
            if local is None:
                raise ConnectionRefusedError("connection refused")
            conn.request("GET", path + (f"?{query}" if query else ""), headers=forwarded_headers(handler.headers))
            resp = conn.getresponse()
        except OSError as exc:
            msg = f"error trying to reach service: dial tcp 127.0.0.1:{port}: connect: {exc}"
            handler._send_json(503, _status(503, "ServiceUnavailable", msg))
            conn.close()
            return
        try:
            handler.send_response(resp.status)
            handler.send_header("Content-Type", resp.getheader("Content-Type", "application/octet-stream"))
            challenge = resp.getheader("WWW-Authenticate")
            if challenge is not None:
                handler.send_header("WWW-Authenticate", challenge)
            length = resp.getheader("Content-Length")
            if length is not None:
                handler.send_header("Content-Length", length)
            else:
                handler.close_connection = True
            handler.end_headers()
            while block := resp.read(1 << 16):
                handler.wfile.write(block)
        except OSError:
            handler.close_connection = True
        finally:
            conn.close()


def forwarded_headers(headers: Any) -> dict[str, str]:
    """What of the caller's headers reaches the pod: not its credentials, identity or hop-by-hop headers."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in _HOP_BY_HOP or low == "authorization" or low.startswith(("x-remote-", "impersonate-")):
            continue
        out[name] = value
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip


__all__ = ["ProxyApiServer", "forwarded_headers"]
