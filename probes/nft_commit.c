// syscalls:sys_enter_sendmsg / sys_exit_sendmsg -> one record per nf_tables transaction (the batch
// that iptables-nft, iptables-nft-restore and nft send; kube-proxy's iptables mode on the nf_tables
// backend and its nftables mode both write rules this way) made from the watched network namespace,
// stamped with bpf_ktime_get_ns() when the syscall returns. nfnetlink runs the whole batch, commit
// included, inside that sendmsg(): the new rules are live, and the monitor's notifications sent, by
// then. The thread id lets the watcher match the record with the NEWGEN / "new generation" line
// that xtables-monitor / nft monitor print for the same commit (NFTA_GEN_PROC_PID is the thread).
// Needs dataplane.h. Decoded by auditor/sources/dataplane/kernel_clock.py (decode_commit).
//
// Cost on every sendmsg() of the node: one 32-byte user read of the msghdr, then the probe returns
// unless msg_namelen is sizeof(struct sockaddr_nl) (12); then the address family, the first iovec
// and the first 20 bytes it points to (nlmsghdr + nfgenmsg) decide: NFNL_MSG_BATCH_BEGIN (0x10)
// for NFNL_SUBSYS_NFTABLES (10; big-endian as nftnl sends it, or host order as old tools did).

#define AF_NETLINK_ 16
#define NFNL_MSG_BATCH_BEGIN_ 16
#define NFNL_SUBSYS_NFTABLES_ 10

struct commit_event {
    u64 enter_ns;
    u64 exit_ns;
    s64 ret;  // sendmsg's return: bytes sent, or -errno (the batch was refused: no commit)
    u32 pid;  // tgid
    u32 tid;
};
BPF_HASH(pending_commits, u64, struct commit_event, 1024);
BPF_PERF_OUTPUT(commits);

struct user_msghdr_head {  // the start of struct user_msghdr (uapi, x86_64/arm64 LP64 layout)
    void *name;
    int namelen;
    int _pad;
    void *iov;
    u64 iovlen;
};

struct nl_batch_head {  // struct nlmsghdr + struct nfgenmsg
    u32 len;
    u16 type;
    u16 flags;
    u32 seq;
    u32 portid;
    u8 family;
    u8 version;
    u16 res_id;
};

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) {
    struct user_msghdr_head m = {};
    if (bpf_probe_read_user(&m, sizeof(m), (void *)args->msg) || m.namelen != 12 || !m.name || !m.iov ||
        !m.iovlen)
        return 0;
    u16 family = 0;
    if (bpf_probe_read_user(&family, sizeof(family), m.name) || family != AF_NETLINK_)
        return 0;
    struct {
        void *base;
        u64 len;
    } iov0 = {};
    if (bpf_probe_read_user(&iov0, sizeof(iov0), m.iov) || iov0.len < sizeof(struct nl_batch_head))
        return 0;
    struct nl_batch_head h = {};
    if (bpf_probe_read_user(&h, sizeof(h), iov0.base) || h.type != NFNL_MSG_BATCH_BEGIN_)
        return 0;
    if (h.res_id != bpf_htons(NFNL_SUBSYS_NFTABLES_) && h.res_id != NFNL_SUBSYS_NFTABLES_)
        return 0;
    if (current_netns_inum() != NETNS_INUM)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct commit_event ev = {};
    ev.enter_ns = bpf_ktime_get_ns();
    ev.pid = id >> 32;
    ev.tid = (u32)id;
    pending_commits.update(&id, &ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) {
    u64 id = bpf_get_current_pid_tgid();
    struct commit_event *ev = pending_commits.lookup(&id);
    if (!ev)
        return 0;
    struct commit_event out = *ev;
    pending_commits.delete(&id);
    out.exit_ns = bpf_ktime_get_ns();
    out.ret = args->ret;
    commits.perf_submit(args, &out, sizeof(out));
    return 0;
}
