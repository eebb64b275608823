"""Find the Kubernetes API: a kubeconfig, ``KUBECONFIG``, the pod's service account, ~/.kube/config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError

_HINT = "pass --kubeconfig, set KUBECONFIG, or run in a pod with a service account"


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """Return a ``kubernetes.client.ApiClient``; a missing or broken configuration is an AuditorError.

    Order: ``kubeconfig`` argument, then ``$KUBECONFIG`` (may list several files), then in-cluster
    (``KUBERNETES_SERVICE_HOST`` and the service-account token), then ``~/.kube/config``.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if kubeconfig:
        if not Path(kubeconfig).is_file():
            raise AuditorError("kubeconfig file not found", where=kubeconfig, hint=_HINT)
        return _from_kubeconfig(kubeconfig, context)
    env = os.environ.get("KUBECONFIG", "")
    if env.strip():
        return _from_kubeconfig(env, context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise AuditorError(f"in-cluster configuration unusable: {exc}", hint=_HINT) from None
        return client.ApiClient(cfg)
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return _from_kubeconfig(str(default), context)
    raise AuditorError("no Kubernetes configuration found", hint=_HINT)


def _from_kubeconfig(path: str, context: str | None) -> Any:
    import yaml
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        return config.new_client_from_config(config_file=path, context=context, persist_config=False)
    except (ConfigException, yaml.YAMLError, OSError, ValueError, KeyError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditorError(f"cannot load kubeconfig: {msg}", where=path, hint=_HINT) from None


def server_version(kubeconfig: str | None, timeout: float) -> str:
    """``GET /version`` with one attempt and a short timeout: ``"v1.30.2 at https://host"``.

    ``kubeconfig`` None: the in-cluster configuration. Any failure of the client is raised as is.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.retries = 0
    with client.ApiClient(configuration) as api:
        info = client.VersionApi(api).get_code(_request_timeout=timeout)
    return f"{info.git_version} at {configuration.host}"
