// syscalls:sys_enter_setsockopt / sys_exit_setsockopt -> one record per legacy iptables table
// replace (setsockopt(SOL_IP or SOL_IPV6, IPT_SO_SET_REPLACE = 64)) made from the watched network
// namespace, stamped with bpf_ktime_get_ns() at the syscall's return: the new table is in place by
// then. Needs dataplane.h. Decoded by auditor/sources/dataplane/kernel_clock.py (decode_replace).

struct replace_event {
    u64 enter_ns;
    u64 exit_ns;
    s64 ret;
    u32 pid;
    u32 level;
};
BPF_HASH(pending, u64, struct replace_event, 1024);
BPF_PERF_OUTPUT(replaces);

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
