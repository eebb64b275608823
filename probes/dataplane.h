// Shared by the dataplane probes (iptables_replace.c, nft_commit.c): they record rule-table commits
// made from one network namespace, the node's (NETNS_INUM, the inode of /proc/<pid>/ns/net or
// /run/netns/<name>). Struct offsets (-DOFF_TASK_NSPROXY, -DOFF_NSPROXY_NET_NS, -DOFF_NET_NS_INUM)
// come from the running kernel's BTF. Loaded by auditor/sources/dataplane/kernel_clock.py.

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
