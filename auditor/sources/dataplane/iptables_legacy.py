"""kube-proxy's iptables mode on the legacy backend: a table replace seen in the kernel, then a diff.

Legacy iptables writes a whole table with one ``setsockopt(SOL_IP, IPT_SO_SET_REPLACE)`` (``SOL_IPV6``,
``IP6T_SO_SET_REPLACE`` for IPv6; both optname 64). A bcc probe on ``syscalls:sys_enter_setsockopt``
/ ``sys_exit_setsockopt`` keeps the successful replaces made from the watched network namespace
(``task->nsproxy->net_ns->ns.inum``, offsets from the running kernel's BTF) and stamps them with
``bpf_ktime_get_ns()`` at the syscall's return: the new table is in place by then. For each one the
watcher reads the nat table (``iptables-legacy-save -t nat``) and diffs the endpoints. Replaces that
follow each other faster than a read are attributed to the first one's time.
"""

from __future__ import annotations

import ctypes
import subprocess
from typing import Any

from auditor.errors import AuditorError
from auditor.sources.dataplane.endpoints import Endpoint
from auditor.sources.dataplane.iptables_rules import IptablesNat
from auditor.sources.dataplane.watcher import DataplaneWatcher, netns_argv, netns_inode

SOL_IP, SOL_IPV6, SO_SET_REPLACE = 0, 41, 64
SAVE = {SOL_IP: ("ipv4", "iptables-legacy-save"), SOL_IPV6: ("ipv6", "ip6tables-legacy-save")}

PROGRAM = r"""
struct replace_event {
    u64 enter_ns;
    u64 exit_ns;
    s64 ret;
    u32 pid;
    u32 level;
};
BPF_HASH(pending, u64, struct replace_event, 1024);
BPF_PERF_OUTPUT(replaces);

static __always_inline u32 current_netns_inum(void) {
    void *task = (void *)bpf_get_current_task();
    void *nsproxy = 0, *net = 0;
    u32 inum = 0;
    bpf_probe_read_kernel(&nsproxy, sizeof(nsproxy), (char *)task + OFF_TASK_NSPROXY);
    if (!nsproxy)
        return 0;
    bpf_probe_read_kernel(&net, sizeof(net), (char *)nsproxy + OFF_NSPROXY_NET_NS);
    if (!net)
        return 0;
    bpf_probe_read_kernel(&inum, sizeof(inum), (char *)net + OFF_NET_NS_INUM);
    return inum;
}

TRACEPOINT_PROBE(syscalls, sys_enter_setsockopt) {
    int level = (int)args->level, optname = (int)args->optname;
    if (optname != 64 || (level != 0 && level != 41))
        return 0;
    if (current_netns_inum() != NETNS_INUM)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct replace_event ev = {};
    ev.enter_ns = bpf_ktime_get_ns();
    ev.pid = id >> 32;
    ev.level = level;
    pending.update(&id, &ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_setsockopt) {
    u64 id = bpf_get_current_pid_tgid();
    struct replace_event *ev = pending.lookup(&id);
    if (!ev)
        return 0;
    struct replace_event out = *ev;
    pending.delete(&id);
    out.exit_ns = bpf_ktime_get_ns();
    out.ret = args->ret;
    replaces.perf_submit(args, &out, sizeof(out));
    return 0;
}
"""


class ReplaceEvent(ctypes.Structure):
    """``struct replace_event`` of :data:`PROGRAM` (raw kernel values)."""

    _fields_ = [
        ("enter_ns_raw", ctypes.c_uint64),
        ("exit_ns_raw", ctypes.c_uint64),
        ("ret", ctypes.c_int64),
        ("pid", ctypes.c_uint32),
        ("level", ctypes.c_uint32),
    ]


class LegacyReplaceWatcher(DataplaneWatcher):
    backend = "iptables-legacy"
    source = "setsockopt-replace+iptables-save-diff"
    poll_ms = 100

    def __init__(self, node: str, netns: str | None = None) -> None:
        super().__init__(node, netns)
        self.model = IptablesNat()
        self.failed_replaces = 0  # replaces the kernel refused (no change)
        self._bpf: Any = None
        self._offset_ns = 0

    def _prepare(self) -> None:
        from auditor.sources.live.btf import load_vmlinux_btf
        from auditor.sources.live.clock import measure_clock_offset
        from auditor.sources.live.environment import prepare_bcc_environment

        env = prepare_bcc_environment()
        if not env.ready:
            raise AuditorError("cannot load the legacy iptables probe: " + "; ".join(env.notes))
        btf = load_vmlinux_btf()
        try:
            cflags = [
                f"-DOFF_TASK_NSPROXY={btf.member_offset('task_struct', 'nsproxy')}",
                f"-DOFF_NSPROXY_NET_NS={btf.member_offset('nsproxy', 'net_ns')}",
                f"-DOFF_NET_NS_INUM={btf.member_offset('net', 'ns.inum')}",
                f"-DNETNS_INUM={netns_inode(self.netns)}u",
            ]
        except KeyError as exc:
            raise AuditorError(f"kernel BTF lacks a member the legacy probe reads: {exc}") from exc
        try:
            from bcc import BPF

            self._bpf = BPF(text=PROGRAM, cflags=[*env.extra_cflags, *cflags])
            self._bpf["replaces"].open_perf_buffer(self._on_replace, page_cnt=16, lost_cb=self._on_lost)
        except Exception as exc:  # bcc raises plain Exception on compile/load errors
            self._bpf = None
            raise AuditorError(f"cannot load the legacy iptables probe: {str(exc).splitlines()[0]}") from exc
        self._offset_ns = measure_clock_offset()
        self._read(SOL_IP)
        self._read(SOL_IPV6, quiet=True)  # a node without IPv6 nat is no failure
        self.current = self.model.endpoints()

    def _read(self, level: int, quiet: bool = False) -> None:
        family, save = SAVE[level]
        argv = [*netns_argv(self.netns), save, "-t", "nat"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            if proc.returncode != 0:
                raise ValueError(proc.stderr.strip()[:200])
            self.model.load_save(proc.stdout, family)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.counters.parse_failures += 0 if quiet else 1

    def _on_replace(self, _cpu: int, data: Any, size: int) -> None:
        if size < ctypes.sizeof(ReplaceEvent):
            self.counters.parse_failures += 1
            return
        event = ReplaceEvent.from_buffer_copy(ctypes.string_at(data, ctypes.sizeof(ReplaceEvent)))
        self.counters.events += 1
        if event.ret != 0 or event.level not in SAVE:
            self.failed_replaces += 1
            return
        self._read(event.level)
        self._commit(self._endpoints(), event.exit_ns_raw + self._offset_ns)

    def _on_lost(self, lost: int) -> None:
        self.counters.lost += lost

    def _endpoints(self) -> set[Endpoint]:
        return self.model.endpoints()

    def _run(self) -> None:
        while not self._stopping.is_set() and self._bpf is not None:
            self._bpf.perf_buffer_poll(self.poll_ms)

    def _shutdown(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(2.0)
        if self._bpf is not None and (self._thread is None or not self._thread.is_alive()):
            self._bpf.cleanup()
            self._bpf = None
