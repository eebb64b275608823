"""``auditor agent --source``: which packet source the agent gets, and the fallback when the probes
cannot load (the capture takes over and says why). The real sources need root; these stand-ins record
what was asked of them (the lab test runs the real capture source)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest

import auditor.agent.sources as sources


class _Probe:
    instances: ClassVar[list[_Probe]] = []
    fail: ClassVar[Exception | None] = None

    def __init__(self, node: str, pod_cidrs: tuple[str, ...] = (), options: Any = None) -> None:
        self.node, self.started, self.closed = node, False, False
        _Probe.instances.append(self)

    def start(self) -> None:
        if _Probe.fail is not None:
            raise _Probe.fail
        self.started = True

    def close(self) -> None:
        self.closed = True


class _Capture:
    name = "capture"

    def __init__(
        self, node: str, interface: str = "any", netns: str | None = None, buffer_mb: int = 32
    ) -> None:
        self.node, self.netns = node, netns
        self.fallback_reason = ""


@pytest.fixture(autouse=True)
def _fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    _Probe.instances, _Probe.fail = [], None
    monkeypatch.setattr(sources, "ProbeSource", _Probe)
    monkeypatch.setattr(sources, "CaptureSource", _Capture)


def test_auto_uses_the_probes_when_they_load() -> None:
    src = sources.open_packet_source("auto", "n1")
    assert (
        isinstance(src, sources.AutoSource) and _Probe.instances == []
    )  # nothing before the agent starts it
    src.start()
    assert isinstance(src.active, _Probe) and src.active.started and src.name == "ebpf"


def test_auto_falls_back_to_capture_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    _Probe.fail = RuntimeError("cannot load probes: no BTF")
    auto = sources.open_packet_source("auto", "n1", netns="/run/netns/x")
    assert isinstance(auto, sources.AutoSource)
    with caplog.at_level(logging.WARNING, logger="auditor.agent"):
        auto.start()
    src = auto.active
    assert isinstance(src, _Capture) and src.netns == "/run/netns/x" and auto.name == "capture"
    assert auto.fallback_reason == src.fallback_reason  # the active source's attributes, through the wrapper
    assert src.fallback_reason == "RuntimeError: cannot load probes: no BTF"
    assert _Probe.instances[0].closed  # what the failed load left is released
    assert "falling back to packet capture" in caplog.text and "without the kernel's reasons" in caplog.text


def test_explicit_choices() -> None:
    assert isinstance(sources.open_packet_source("capture", "n1"), _Capture)
    assert _Probe.instances == []  # capture asked: the probes are not even tried
    probe = sources.open_packet_source("ebpf", "n1")
    assert isinstance(probe, _Probe) and not probe.started  # the agent starts it (a failure is fatal then)


def test_auto_when_neither_works_says_both(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.errors import AuditorError

    class _NoCapture:
        def __init__(self, *a: Any, **k: Any) -> None:
            raise AuditorError("cannot capture: any: permission denied", "any")

    _Probe.fail = RuntimeError("loading eBPF probes needs root")
    monkeypatch.setattr(sources, "CaptureSource", _NoCapture)
    with pytest.raises(AuditorError) as err:
        sources.open_packet_source("auto", "n1").start()
    line = err.value.line()
    assert "loading eBPF probes needs root" in line and "permission denied" in line
