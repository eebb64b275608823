"""The Kubernetes API side of the agent: the only package that imports the ``kubernetes`` client.

* :func:`load_api_client` — kubeconfig / ``KUBECONFIG`` / in-cluster configuration.
* :class:`KubeWatcher` — list-then-watch of pods, EndpointSlices and Events with bookmarks,
  reconnect with backoff and relist on 410 Gone; calls back with :class:`WatchEvent`.
* :class:`StreamRecorder` — writes events in the ``kubectl get --watch --output-watch-events -o json``
  format, each with ``observedAt``, which ``auditor.sources.kube_stream`` reads.
"""

from auditor.kubeapi.config import load_api_client
from auditor.kubeapi.recorder import StreamRecorder, format_observed_at
from auditor.kubeapi.watcher import KINDS, Backoff, KubeWatcher, WatchEvent, WatchStats

__all__ = [
    "KINDS",
    "Backoff",
    "KubeWatcher",
    "StreamRecorder",
    "WatchEvent",
    "WatchStats",
    "format_observed_at",
    "load_api_client",
]
