// tcp:tcp_send_reset and tcp:tcp_receive_reset -> K_RST_SENT / K_RST_RECEIVED.
// Field offsets: -DSR_OFF_<FIELD> (send) and -DRR_OFF_<FIELD> (receive) from the format files;
// -DSR_SOCKADDR when the addresses are sockaddr-sized (6.10+), -D<TP>_HAS_<FIELD> for optional fields.
// Decoded by auditor/sources/live/decode_tcp_reset.py; counted in the aggregates (aggregates.h).

#include "aggregates.h"

struct ev_tcp_reset {
    struct ev_hdr hdr;
    struct ev_tuple t;  // as the tracepoint reports it: saddr = this host's side
    u32 state;          // TCP state of the socket (0 when there is none)
    u32 reason;         // enum sk_rst_reason (send, 6.10+), else 0
    u32 trigger_flags;  // send without a socket: TCP flags of the packet answered (0: unknown)
};

static __always_inline u16 split_family(const void *ctx, const int has_family, const int off_family,
                                        const int off_s6) {
    if (has_family)
        return tp_u16(ctx, off_family);
    // no family field: IPv4 sockets show a v4-mapped ::ffff:a.b.c.d in saddr_v6
    u8 a[12] = {};
    u64 lo = 0;
    u32 hi = 0;
    tp_bytes4(a, ctx, off_s6);
    tp_bytes4(a + 4, ctx, off_s6 + 4);
    tp_bytes4(a + 8, ctx, off_s6 + 8);
    __builtin_memcpy(&lo, a, 8);
    __builtin_memcpy(&hi, a + 8, 4);
    return (lo == 0 && hi == bpf_htonl(0xffff)) ? AF_INET_ : AF_INET6_;
}

#ifdef TP_TCP_SEND_RESET
// The aggregate key of a filled rst_sent event (sk: whether the kernel had a socket for it). The key's
// server side: the RST's sender when it answered a SYN without a socket (a refusal), else the lower
// port's end (ties: the sender).
static __always_inline void send_reset_key(const void *sk, struct ev_tcp_reset *ev, struct agg_key *k) {
    int refusal = !sk && (ev->trigger_flags & (TCP_FLAG_SYN_ | TCP_FLAG_ACK_)) == TCP_FLAG_SYN_;
    int use_s = refusal || ev->t.sport <= ev->t.dport;
    agg_addr(k, &ev->t, use_s, use_s ? AGG_SRC : AGG_DST);
    k->kind = K_RST_SENT;
    k->family = ev->hdr.family;
    k->state = ev->state;
    k->reason = ev->reason;
    k->flags = ev->trigger_flags;
    k->ip_proto = 6;
}

// The event (zeroed) from the record, and its aggregate key.
static __always_inline void fill_send_reset(void *ctx, struct ev_tcp_reset *ev, struct agg_key *k) {
    const void *sk = tp_ptr(ctx, SR_OFF_SKADDR);
#ifdef SR_HAS_SKBADDR
    const void *skb = tp_ptr(ctx, SR_OFF_SKBADDR);
#else
    const void *skb = 0;
#endif
    fill_hdr(&ev->hdr, K_RST_SENT, sk ? netns_of_sk(sk) : netns_of_skb(skb));
#ifdef SR_SOCKADDR
    ev->hdr.family = read_sockaddrs(ctx, &ev->t, SR_OFF_SADDR, SR_OFF_DADDR);
#else
#ifdef SR_HAS_FAMILY
    ev->hdr.family = split_family(ctx, 1, SR_OFF_FAMILY, SR_OFF_SADDR_V6);
#else
    ev->hdr.family = split_family(ctx, 0, 0, SR_OFF_SADDR_V6);
#endif
    ev->t.sport = tp_u16(ctx, SR_OFF_SPORT);
    ev->t.dport = tp_u16(ctx, SR_OFF_DPORT);
    read_split_addrs(ctx, &ev->t, ev->hdr.family, SR_OFF_SADDR, SR_OFF_DADDR, SR_OFF_SADDR_V6,
                     SR_OFF_DADDR_V6);
#endif
#ifdef SR_HAS_STATE
    ev->state = tp_u32(ctx, SR_OFF_STATE);
#endif
#ifdef SR_HAS_REASON
    ev->reason = tp_u32(ctx, SR_OFF_REASON);
#endif
    // Without a socket the kernel answers a packet nobody owns: a SYN (a refused connection), or a
    // late ACK / data for a connection already gone. The answered packet's flags say which.
    if (!sk && skb) {
        struct ev_tuple answered = {};
        u8 flags = 0;
        if (read_skb_tuple(skb, ev->hdr.family, &answered, &flags) == 6)
            ev->trigger_flags = flags;
    }
    send_reset_key(sk, ev, k);
}

int on_tcp_send_reset(void *ctx) {
    struct agg_key k = {};
#ifdef USE_RINGBUF
    struct ev_tcp_reset *ev = ev_reserve(sizeof(struct ev_tcp_reset));
    if (ev) {
        __builtin_memset(ev, 0, sizeof(struct ev_tcp_reset));
        fill_send_reset(ctx, ev, &k);
        agg_count(&k, ev->hdr.ts_ns);
        ev_submit(ev, K_RST_SENT);
        return 0;
    }
#endif
    struct ev_tcp_reset s = {};
    fill_send_reset(ctx, &s, &k);
    struct agg_val *v = agg_count(&k, s.hdr.ts_ns);
    if (emit(ctx, &s, sizeof(s), K_RST_SENT))
        agg_detail_lost(v);
    return 0;
}

#ifdef SR_RAW
// The same event from the raw tracepoint (args: sk, skb[, reason]), what the loader attaches when it can.
// A program attached through perf (above) runs under the kernel's per-CPU bpf_prog_active guard: it is
// skipped whenever any kprobe or tracepoint program already runs on that CPU, as when the softirq that
// refuses a SYN runs on the exit of an interrupt taken inside one (a refused SYN the ingress lab's
// retransmit timer sent: no event, no count, only the program's recursion_misses). A raw tracepoint
// program has a guard of its own: skipped only inside a run of itself. The record's fields are rebuilt
// as the tracepoint builds them: a full socket's own addresses, else (no socket, a TIME_WAIT or request
// socket) the answered packet's, swapped. Offsets: -DOFF_SK_{FAMILY,DPORT,RCV_SADDR,DADDR,V6_*}, -DOFF_INET_SPORT (BTF).
#define TCP_TIME_WAIT_ 6
#define TCP_NEW_SYN_RECV_ 12

// AF_INET_/AF_INET6_ from the IP version of the skb's network header (0: neither).
static __always_inline u16 skb_ip_family(const void *skb) {
    const unsigned char *head = 0;
    u16 nh = 0;
    u8 vihl = 0;
    bpf_probe_read_kernel(&head, sizeof(head), (const char *)skb + OFF_SKB_HEAD);
    bpf_probe_read_kernel(&nh, sizeof(nh), (const char *)skb + OFF_SKB_NETWORK_HEADER);
    if (!head || nh == 0xffff)
        return 0;
    bpf_probe_read_kernel(&vihl, 1, head + nh);
    return (vihl >> 4) == 4 ? AF_INET_ : (vihl >> 4) == 6 ? AF_INET6_ : 0;
}

static __always_inline void fill_send_reset_raw(struct bpf_raw_tracepoint_args *ctx, struct ev_tcp_reset *ev,
                                                struct agg_key *k) {
    const void *sk = (const void *)ctx->args[0];
    const void *skb = (const void *)ctx->args[1];
    u32 state = 0;  // sk->__sk_common.skc_state (0: no socket, as the tracepoint's field)
    u32 netns = sk ? netns_state_of_sk(sk, &state) : netns_of_skb(skb);
    fill_hdr(&ev->hdr, K_RST_SENT, netns);
    ev->state = state;
#ifdef SR_HAS_REASON
    ev->reason = (u32)ctx->args[2];
#endif
    if (sk && state != TCP_TIME_WAIT_ && state != TCP_NEW_SYN_RECV_) {
        const char *c = (const char *)sk;
        u16 family = 0, sport = 0, dport = 0;
        bpf_probe_read_kernel(&family, sizeof(family), c + OFF_SK_FAMILY);
        bpf_probe_read_kernel(&sport, sizeof(sport), c + OFF_INET_SPORT);
        bpf_probe_read_kernel(&dport, sizeof(dport), c + OFF_SK_DPORT);
        ev->hdr.family = family;
        ev->t.sport = bpf_ntohs(sport);
        ev->t.dport = bpf_ntohs(dport);
        if (family == AF_INET_) {
            bpf_probe_read_kernel(ev->t.saddr, 4, c + OFF_SK_RCV_SADDR);
            bpf_probe_read_kernel(ev->t.daddr, 4, c + OFF_SK_DADDR);
        } else if (family == AF_INET6_) {
            bpf_probe_read_kernel(ev->t.saddr, 16, c + OFF_SK_V6_RCV_SADDR);
            bpf_probe_read_kernel(ev->t.daddr, 16, c + OFF_SK_V6_DADDR);
        }
    } else if (skb) {
        struct ev_tuple answered = {};
        u8 flags = 0;
        u16 family = skb_ip_family(skb);
        ev->hdr.family = family;
        if (family && read_skb_tuple(skb, family, &answered, &flags) == 6) {
            __builtin_memcpy(ev->t.saddr, answered.daddr, 16);
            __builtin_memcpy(ev->t.daddr, answered.saddr, 16);
            ev->t.sport = answered.dport;
            ev->t.dport = answered.sport;
            if (!sk)
                ev->trigger_flags = flags;
        }
    }
    send_reset_key(sk, ev, k);
}

int on_tcp_send_reset_raw(struct bpf_raw_tracepoint_args *ctx) {
    struct agg_key k = {};
#ifdef USE_RINGBUF
    struct ev_tcp_reset *ev = ev_reserve(sizeof(struct ev_tcp_reset));
    if (ev) {
        __builtin_memset(ev, 0, sizeof(struct ev_tcp_reset));
        fill_send_reset_raw(ctx, ev, &k);
        agg_count(&k, ev->hdr.ts_ns);
        ev_submit(ev, K_RST_SENT);
        return 0;
    }
#endif
    struct ev_tcp_reset s = {};
    fill_send_reset_raw(ctx, &s, &k);
    struct agg_val *v = agg_count(&k, s.hdr.ts_ns);
    if (emit(ctx, &s, sizeof(s), K_RST_SENT))
        agg_detail_lost(v);
    return 0;
}
#endif
#endif

#ifdef TP_TCP_RECEIVE_RESET
// The event (zeroed) and its key. The record names the local socket (s) and the peer that sent the
// RST (d); the key's server side: the peer when the local socket was connecting, else the lower
// port's end (ties: the peer).
static __always_inline void fill_receive_reset(void *ctx, struct ev_tcp_reset *ev, struct agg_key *k) {
    const void *sk = tp_ptr(ctx, RR_OFF_SKADDR);
    u32 state = 0;  // sk->__sk_common.skc_state (0: no socket)
    fill_hdr(&ev->hdr, K_RST_RECEIVED, netns_state_of_sk(sk, &state));
    ev->state = state;
#ifdef RR_HAS_FAMILY
    ev->hdr.family = split_family(ctx, 1, RR_OFF_FAMILY, RR_OFF_SADDR_V6);
#else
    ev->hdr.family = split_family(ctx, 0, 0, RR_OFF_SADDR_V6);
#endif
    ev->t.sport = tp_u16(ctx, RR_OFF_SPORT);
    ev->t.dport = tp_u16(ctx, RR_OFF_DPORT);
    read_split_addrs(ctx, &ev->t, ev->hdr.family, RR_OFF_SADDR, RR_OFF_DADDR, RR_OFF_SADDR_V6,
                     RR_OFF_DADDR_V6);
    int use_s = state != 2 && ev->t.sport < ev->t.dport;  // 2: TCP_SYN_SENT
    agg_addr(k, &ev->t, use_s, use_s ? AGG_DST : AGG_SRC);
    k->kind = K_RST_RECEIVED;
    k->family = ev->hdr.family;
    k->state = state;
    k->ip_proto = 6;
}

int on_tcp_receive_reset(void *ctx) {
    struct agg_key k = {};
#ifdef USE_RINGBUF
    struct ev_tcp_reset *ev = ev_reserve(sizeof(struct ev_tcp_reset));
    if (ev) {
        __builtin_memset(ev, 0, sizeof(struct ev_tcp_reset));
        fill_receive_reset(ctx, ev, &k);
        agg_count(&k, ev->hdr.ts_ns);
        ev_submit(ev, K_RST_RECEIVED);
        return 0;
    }
#endif
    struct ev_tcp_reset s = {};
    fill_receive_reset(ctx, &s, &k);
    struct agg_val *v = agg_count(&k, s.hdr.ts_ns);
    if (emit(ctx, &s, sizeof(s), K_RST_RECEIVED))
        agg_detail_lost(v);
    return 0;
}
#endif
