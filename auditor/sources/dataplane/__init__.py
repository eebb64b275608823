"""Dataplane watchers: when this node's kube-proxy rules really stop (or start) routing to a pod.

    watcher = watch_dataplane("node-a", backend="auto", netns=None)
    watcher.start(lambda record: print(record.to_json_line()))
    ...
    watcher.stop()
    watcher.counters  # events, transactions, parse_failures, lost, records

Backends: ``iptables-nft`` (xtables-monitor -e), ``iptables-legacy`` (setsockopt tracepoint + table
read), ``nftables`` (nft -a monitor). Records are ``auditor.model.dataplane.DataplaneRecord``.
"""

from auditor.sources.dataplane.detect import detect_backend, watch_dataplane
from auditor.sources.dataplane.endpoints import Endpoint, diff_endpoints
from auditor.sources.dataplane.watcher import DataplaneWatcher, WatcherCounters

__all__ = [
    "DataplaneWatcher",
    "Endpoint",
    "WatcherCounters",
    "detect_backend",
    "diff_endpoints",
    "watch_dataplane",
]
