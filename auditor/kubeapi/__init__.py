"""The Kubernetes API side of auditor: the only package that imports the ``kubernetes`` client.

* :func:`load_api_client` — kubeconfig / ``KUBECONFIG`` / in-cluster configuration;
  :func:`~auditor.kubeapi.config.server_version` — one ``GET /version`` (``auditor doctor``).
* :class:`KubeWatcher` — list-then-watch of pods, EndpointSlices and Events with bookmarks,
  reconnect with backoff and relist on 410 Gone; calls back with :class:`WatchEvent`.
* :class:`StreamRecorder` — writes events in the ``kubectl get --watch --output-watch-events -o json``
  format, each with ``observedAt``, which ``auditor.sources.kube_stream`` reads.
* :mod:`auditor.kubeapi.proxy` — pods by label and GETs through the pod proxy (``auditor collect``).
* :mod:`auditor.kubeapi.workloads` — workloads (GET, strategic-merge and merge PATCH), Services, the load
  Job, its pod's log and ``/version``, failures as one line naming the verb and resource
  (``auditor rollout-test``).
"""

from auditor.kubeapi.config import load_api_client
from auditor.kubeapi.recorder import StreamRecorder
from auditor.kubeapi.watcher import KINDS, Backoff, KubeWatcher, WatchEvent, WatchStats

__all__ = [
    "KINDS",
    "Backoff",
    "KubeWatcher",
    "StreamRecorder",
    "WatchEvent",
    "WatchStats",
    "load_api_client",
]
