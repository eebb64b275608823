// Shared by every probe family: the event header, the output channel and per-kind counters (the
// in-kernel aggregates are in aggregates.h, which each family includes).
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

// Counts the event as seen, sends it (a copy), counts it as lost if the channel is full. `ev` starts
// with its struct ev_hdr, already filled (its ts_ns paces the wakeups). Returns 1 if it was lost.
static __always_inline int emit(void *ctx, void *ev, u32 size, u32 kind) {
    int rc;
    u32 idx = kind * 2;
    count(idx);
#ifdef USE_RINGBUF
    rc = events.ringbuf_output(ev, size, wakeup_flag(((struct ev_hdr *)ev)->ts_ns));
#else
    rc = events.perf_submit(ctx, ev, size);
#endif
    if (rc < 0) {
        count(idx + 1);
        return 1;
    }
    return 0;
}

// The hot probes build their event in place in the ring buffer (no stack copy): ev_reserve() gives
// room for it (0 when the buffer is full: the probe then builds it on the stack and emit()s it, which
// counts it lost unless room came meanwhile), ev_submit() counts it seen and sends it.
#ifdef USE_RINGBUF
// (bcc does not expand map calls inside macros or the callers' inline code paths: these wrap them)
static __always_inline void *ev_reserve(u32 size) {
    return events.ringbuf_reserve(size);
}
static __always_inline void ev_submit(void *ev, u32 kind) {
    count(kind * 2);
    events.ringbuf_submit(ev, wakeup_flag(((struct ev_hdr *)ev)->ts_ns));
}
#endif

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

// netns inode and skc_state of a socket: both sock_common members come in one read when close.
#define SK_LO (OFF_SK_NET < OFF_SK_STATE ? OFF_SK_NET : OFF_SK_STATE)
#define SK_SPAN ((OFF_SK_NET > OFF_SK_STATE ? OFF_SK_NET + 8 : OFF_SK_STATE + 1) - SK_LO)
static __always_inline u32 netns_state_of_sk(const void *sk, u32 *state) {
    void *net = 0;
    u32 inum = 0;
    if (!sk)
        return 0;
    if (SK_SPAN <= 64) {
        u8 buf[64];
        if (bpf_probe_read_kernel(buf, SK_SPAN, (const char *)sk + SK_LO))
            return 0;
        *state = buf[OFF_SK_STATE - SK_LO];
        __builtin_memcpy(&net, buf + (OFF_SK_NET - SK_LO), sizeof(net));
    } else {
        u8 st = 0;
        bpf_probe_read_kernel(&st, 1, (const char *)sk + OFF_SK_STATE);
        *state = st;
        bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + OFF_SK_NET);
    }
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

// Tracepoint record fields, loaded straight from the record (ctx) at the -D offsets: no copy of the
// whole record, and a program can filter on one field before reading the others. The verifier takes
// only ctx loads whose offset is a constant in the instruction and a multiple of the load size, so
// offsets stay compile-time constants (always-inline helpers, unrolled) and byte arrays are read in
// the widest aligned pieces (saddr[4] at offset 22: two u16 loads).
#define TP_LOAD(ctx, type, off) (*(const volatile type *)((const char *)(ctx) + (off)))

static __always_inline const void *tp_ptr(const void *ctx, const int off) {
    return (const void *)TP_LOAD(ctx, u64, off);
}

static __always_inline u32 tp_u32(const void *ctx, const int off) {
    return TP_LOAD(ctx, u32, off);
}

static __always_inline u16 tp_u16(const void *ctx, const int off) {
    return TP_LOAD(ctx, u16, off);
}

// 4 / 16 bytes of the record at `off` to dst, straight-line (a loop would not keep `off` constant).
static __always_inline void tp_bytes4(u8 *dst, const void *ctx, const int off) {
    if (off % 4 == 0) {
        u32 v = TP_LOAD(ctx, u32, off);
        __builtin_memcpy(dst, &v, 4);
    } else if (off % 2 == 0) {
        u16 a = TP_LOAD(ctx, u16, off), b = TP_LOAD(ctx, u16, off + 2);
        __builtin_memcpy(dst, &a, 2);
        __builtin_memcpy(dst + 2, &b, 2);
    } else {
        dst[0] = TP_LOAD(ctx, u8, off);
        dst[1] = TP_LOAD(ctx, u8, off + 1);
        dst[2] = TP_LOAD(ctx, u8, off + 2);
        dst[3] = TP_LOAD(ctx, u8, off + 3);
    }
}

static __always_inline void tp_bytes16(u8 *dst, const void *ctx, const int off) {
    if (off % 8 == 0) {
        u64 a = TP_LOAD(ctx, u64, off), b = TP_LOAD(ctx, u64, off + 8);
        __builtin_memcpy(dst, &a, 8);
        __builtin_memcpy(dst + 8, &b, 8);
    } else {
        tp_bytes4(dst, ctx, off);
        tp_bytes4(dst + 4, ctx, off + 4);
        tp_bytes4(dst + 8, ctx, off + 8);
        tp_bytes4(dst + 12, ctx, off + 12);
    }
}

// Both address forms are loaded before the family picks one: loads in two branches that differ
// only in their offset get merged by clang into one load at a computed (rejected) ctx offset.
static __always_inline void pick_addrs(struct ev_tuple *t, u16 family, const u8 *s4, const u8 *d4,
                                       const u8 *s6, const u8 *d6) {
    if (family == AF_INET_) {
        __builtin_memcpy(t->saddr, s4, 4);
        __builtin_memcpy(t->daddr, d4, 4);
    } else if (family == AF_INET6_) {
        __builtin_memcpy(t->saddr, s6, 16);
        __builtin_memcpy(t->daddr, d6, 16);
    }
}

// Addresses stored as two sockaddr_in/sockaddr_in6 (6.10+ tcp_send_reset): family, be16 port, address.
static __always_inline u16 read_sockaddrs(const void *ctx, struct ev_tuple *t, const int off_s, const int off_d) {
    u8 s4[4], d4[4], s6[16], d6[16];
    u16 fam = tp_u16(ctx, off_s);
    t->sport = bpf_ntohs(tp_u16(ctx, off_s + 2));
    t->dport = bpf_ntohs(tp_u16(ctx, off_d + 2));
    tp_bytes4(s4, ctx, off_s + 4);
    tp_bytes4(d4, ctx, off_d + 4);
    tp_bytes16(s6, ctx, off_s + 8);
    tp_bytes16(d6, ctx, off_d + 8);
    pick_addrs(t, fam, s4, d4, s6, d6);
    return fam;
}

// Addresses stored split (older layouts): saddr[4], daddr[4], saddr_v6[16], daddr_v6[16], ports in
// host order. The v6 arrays hold the v4-mapped address for IPv4 sockets; any family but AF_INET
// takes them.
static __always_inline void read_split_addrs(const void *ctx, struct ev_tuple *t, u16 family, const int off_s4,
                                             const int off_d4, const int off_s6, const int off_d6) {
    u8 s4[4], d4[4], s6[16], d6[16];
    tp_bytes4(s4, ctx, off_s4);
    tp_bytes4(d4, ctx, off_d4);
    tp_bytes16(s6, ctx, off_s6);
    tp_bytes16(d6, ctx, off_d6);
    pick_addrs(t, family == AF_INET_ ? AF_INET_ : AF_INET6_, s4, d4, s6, d6);
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
