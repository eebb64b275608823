// Shared by every probe family: the event header, the output channel and per-kind counters.
// Layout mirrored by auditor/sources/live/events.py. All offsets (-DOFF_*, -D<TP>_OFF_*) come from
// the running kernel's tracefs format files and BTF, passed by the loader through cflags.

#define K_RST_SENT 1
#define K_RST_RECEIVED 2
#define K_REFUSED 3
#define K_LISTEN_CLOSE 4
#define K_ICMP_UNREACH 5
#define K_DROP 6
#define N_KINDS 7

#define AF_INET_ 2
#define AF_INET6_ 10

#ifndef WAKEUP_BATCH
#define WAKEUP_BATCH 64
#endif
#ifndef WAKEUP_MIN_NS
#define WAKEUP_MIN_NS 5000000ULL  // at most one forced wakeup per 5 ms per CPU
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 1024
#endif

struct ev_hdr {
    u64 ts_ns;   // bpf_ktime_get_ns(): CLOCK_MONOTONIC
    u32 kind;    // K_*
    u32 netns;   // inode number of the network namespace (0: unknown)
    u32 pid;     // tgid of the current task (often unrelated in softirq context)
    u16 family;  // AF_INET / AF_INET6 (0: unknown)
    u16 _pad;
};

struct ev_tuple {
    u8 saddr[16];  // IPv4 in the first 4 bytes
    u8 daddr[16];
    u16 sport;     // host byte order
    u16 dport;
};

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
// counters[kind * 2] = events seen, counters[kind * 2 + 1] = events lost (output full)
BPF_PERCPU_ARRAY(counters, u64, N_KINDS * 2);

static __always_inline void count(u32 idx) {
    u64 *v = counters.lookup(&idx);
    if (v)
        *v += 1;
}

#ifdef USE_RINGBUF
// Per CPU: events written since the reader was last woken, and when that was (bpf_ktime_get_ns).
struct wakeup_state {
    u64 pending;
    u64 last_ns;
};
BPF_PERCPU_ARRAY(wakeups, struct wakeup_state, 1);

// A forced wakeup (an IPI to this CPU, then one to the reader's) costs ~10-20 us in a VM: far more
// than the event itself. Wake the reader once WAKEUP_BATCH events are pending on this CPU, but not
// more often than every WAKEUP_MIN_NS; the reader polls with a timeout and takes the rest then.
static __always_inline u64 wakeup_flag(u64 now) {
    u32 zero = 0;
    struct wakeup_state *w = wakeups.lookup(&zero);
    if (!w)
        return BPF_RB_NO_WAKEUP;
    w->pending += 1;
    if (w->pending < WAKEUP_BATCH || now - w->last_ns < WAKEUP_MIN_NS)
        return BPF_RB_NO_WAKEUP;
    w->pending = 0;
    w->last_ns = now;
    return BPF_RB_FORCE_WAKEUP;
}
#endif

// Counts the event as seen, sends it, counts it as lost if the channel is full. `ev` starts with
// its struct ev_hdr, already filled (its ts_ns paces the wakeups).
static __always_inline void emit(void *ctx, void *ev, u32 size, u32 kind) {
    int rc;
    u32 idx = kind * 2;
    count(idx);
#ifdef USE_RINGBUF
    rc = events.ringbuf_output(ev, size, wakeup_flag(((struct ev_hdr *)ev)->ts_ns));
#else
    rc = events.perf_submit(ctx, ev, size);
#endif
    if (rc < 0)
        count(idx + 1);
}

static __always_inline void fill_hdr(struct ev_hdr *h, u32 kind, u32 netns) {
    h->ts_ns = bpf_ktime_get_ns();
    h->kind = kind;
    h->netns = netns;
    h->pid = bpf_get_current_pid_tgid() >> 32;
}

static __always_inline u32 netns_of_sk(const void *sk) {
    void *net = 0;
    u32 inum = 0;
    if (!sk)
        return 0;
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + OFF_SK_NET);
    if (!net)
        return 0;
    bpf_probe_read_kernel(&inum, sizeof(inum), (const char *)net + OFF_NET_INUM);
    return inum;
}

static __always_inline u32 netns_of_skb(const void *skb) {
    void *sk = 0, *dev = 0, *net = 0;
    u32 inum = 0;
    if (!skb)
        return 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), (const char *)skb + OFF_SKB_DEV);
    if (dev) {
        bpf_probe_read_kernel(&net, sizeof(net), (const char *)dev + OFF_DEV_NET);
        if (net) {
            bpf_probe_read_kernel(&inum, sizeof(inum), (const char *)net + OFF_NET_INUM);
            return inum;
        }
    }
    bpf_probe_read_kernel(&sk, sizeof(sk), (const char *)skb + OFF_SKB_SK);
    return netns_of_sk(sk);
}

// Tracepoint record fields. Each program copies the record once (one helper call, -D<P>_REC_SIZE
// bytes: up to the end of its last field) to the stack, then picks fields at the -D offsets.
#define TP_RECORD(ctx, rec) bpf_probe_read_kernel(rec, sizeof(rec), ctx)

static __always_inline const void *tp_ptr(const u8 *rec, int off) {
    const void *p = 0;
    __builtin_memcpy(&p, rec + off, sizeof(p));
    return p;
}

static __always_inline u32 tp_u32(const u8 *rec, int off) {
    u32 v = 0;
    __builtin_memcpy(&v, rec + off, sizeof(v));
    return v;
}

static __always_inline u16 tp_u16(const u8 *rec, int off) {
    u16 v = 0;
    __builtin_memcpy(&v, rec + off, sizeof(v));
    return v;
}

// Addresses stored as two sockaddr_in/sockaddr_in6 (6.10+ tcp_send_reset): family, be16 port, address.
static __always_inline u16 read_sockaddrs(const u8 *rec, struct ev_tuple *t, int off_s, int off_d) {
    u16 fam = tp_u16(rec, off_s);
    t->sport = bpf_ntohs(tp_u16(rec, off_s + 2));
    t->dport = bpf_ntohs(tp_u16(rec, off_d + 2));
    if (fam == AF_INET_) {
        __builtin_memcpy(t->saddr, rec + off_s + 4, 4);
        __builtin_memcpy(t->daddr, rec + off_d + 4, 4);
    } else if (fam == AF_INET6_) {
        __builtin_memcpy(t->saddr, rec + off_s + 8, 16);
        __builtin_memcpy(t->daddr, rec + off_d + 8, 16);
    }
    return fam;
}

// Addresses stored split (older layouts): saddr[4], daddr[4], saddr_v6[16], daddr_v6[16], ports in
// host order. The v6 arrays hold the v4-mapped address for IPv4 sockets.
static __always_inline void read_split_addrs(const u8 *rec, struct ev_tuple *t, u16 family, int off_s4,
                                             int off_d4, int off_s6, int off_d6) {
    if (family == AF_INET_) {
        __builtin_memcpy(t->saddr, rec + off_s4, 4);
        __builtin_memcpy(t->daddr, rec + off_d4, 4);
    } else {
        __builtin_memcpy(t->saddr, rec + off_s6, 16);
        __builtin_memcpy(t->daddr, rec + off_d6, 16);
    }
}

// The IPv4/IPv6 header of an skb (at skb->head + skb->network_header) and the TCP/UDP ports
// behind it. Returns the IP protocol (0 if the header does not look like IP of that family).
static __always_inline u8 read_skb_tuple(const void *skb, u16 family, struct ev_tuple *t, u8 *tcp_flags) {
    const unsigned char *head = 0;
    u16 nh = 0;
    u8 proto = 0, vihl = 0;
    u32 l4 = 0;
    bpf_probe_read_kernel(&head, sizeof(head), (const char *)skb + OFF_SKB_HEAD);
    bpf_probe_read_kernel(&nh, sizeof(nh), (const char *)skb + OFF_SKB_NETWORK_HEADER);
    if (!head || nh == 0xffff)
        return 0;
    const unsigned char *ip = head + nh;
    bpf_probe_read_kernel(&vihl, 1, ip);
    if (family == AF_INET_) {
        if ((vihl >> 4) != 4)
            return 0;
        bpf_probe_read_kernel(&proto, 1, ip + 9);
        bpf_probe_read_kernel(t->saddr, 4, ip + 12);
        bpf_probe_read_kernel(t->daddr, 4, ip + 16);
        l4 = (vihl & 0xf) * 4;
    } else {
        if ((vihl >> 4) != 6)
            return 0;
        bpf_probe_read_kernel(&proto, 1, ip + 6);  // next header (extension headers not followed)
        bpf_probe_read_kernel(t->saddr, 16, ip + 8);
        bpf_probe_read_kernel(t->daddr, 16, ip + 24);
        l4 = 40;
    }
    if (proto == 6 || proto == 17) {
        u16 ports[2] = {};
        bpf_probe_read_kernel(ports, sizeof(ports), ip + l4);
        t->sport = bpf_ntohs(ports[0]);
        t->dport = bpf_ntohs(ports[1]);
        if (proto == 6)
            bpf_probe_read_kernel(tcp_flags, 1, ip + l4 + 13);
    }
    return proto;
}
