// skb:kfree_skb with a drop reason -> K_DROP, filtered in the kernel to IPv4/IPv6 packets whose
// source or destination is in one of the pod CIDRs (map pod_cidrs, N_POD_CIDRS entries, filled
// by the loader before attaching). Offsets: -DKF_OFF_<FIELD>.
// Decoded by auditor/sources/live/decode_skb_drop.py; counted in the aggregates (aggregates.h) under the
// server side: the destination of a SYN, else the lower port's end (ties: the destination).

#include "aggregates.h"

#ifndef N_POD_CIDRS
#define N_POD_CIDRS 0
#endif
#define MAX_POD_CIDRS 16
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD

struct pod_cidr {
    u32 family;
    u32 v4_net;   // network byte order, already masked
    u32 v4_mask;
    u32 _pad;
    u64 v6_net[2];
    u64 v6_mask[2];
};
BPF_ARRAY(pod_cidrs, struct pod_cidr, MAX_POD_CIDRS);

struct ev_drop {
    struct ev_hdr hdr;
    struct ev_tuple t;
    u32 reason;      // enum skb_drop_reason
    u16 protocol;    // ethertype (host order)
    u8 ip_proto;
    u8 tcp_flags;
    u64 location;    // kernel text address that dropped it
};

static __always_inline int in_cidr(struct pod_cidr *c, u16 family, const u8 *addr) {
    if (c->family != family)
        return 0;
    if (family == AF_INET_) {
        u32 a = 0;
        __builtin_memcpy(&a, addr, 4);
        return (a & c->v4_mask) == c->v4_net;
    }
    u64 a[2] = {};
    __builtin_memcpy(a, addr, 16);
    return (a[0] & c->v6_mask[0]) == c->v6_net[0] && (a[1] & c->v6_mask[1]) == c->v6_net[1];
}

#ifdef TP_KFREE_SKB
int on_kfree_skb(void *ctx) {
#ifdef KF_HAS_REASON
    u32 reason = tp_u32(ctx, KF_OFF_REASON);
    if (reason <= 1)  // SKB_NOT_DROPPED_YET, SKB_CONSUMED
        return 0;
#else
    u32 reason = 0;
#endif
    u16 protocol = tp_u16(ctx, KF_OFF_PROTOCOL);
    u16 family;
    if (protocol == ETH_P_IP_)
        family = AF_INET_;
    else if (protocol == ETH_P_IPV6_)
        family = AF_INET6_;
    else
        return 0;
    struct ev_drop ev = {};
    const void *skb = tp_ptr(ctx, KF_OFF_SKBADDR);
    ev.ip_proto = read_skb_tuple(skb, family, &ev.t, &ev.tcp_flags);
    if (!ev.ip_proto)
        return 0;
    int match = 0;
#pragma unroll
    for (u32 i = 0; i < MAX_POD_CIDRS; i++) {
        if (i >= N_POD_CIDRS)
            break;
        u32 k = i;
        struct pod_cidr *c = pod_cidrs.lookup(&k);
        if (c && (in_cidr(c, family, ev.t.saddr) || in_cidr(c, family, ev.t.daddr))) {
            match = 1;
            break;
        }
    }
    if (!match)
        return 0;
    fill_hdr(&ev.hdr, K_DROP, netns_of_skb(skb));
    ev.hdr.family = family;
    ev.reason = reason;
    ev.protocol = protocol;
    ev.location = (u64)tp_ptr(ctx, KF_OFF_LOCATION);
    struct agg_key k = {};
    int syn = ev.ip_proto == 6 && (ev.tcp_flags & (TCP_FLAG_SYN_ | TCP_FLAG_ACK_)) == TCP_FLAG_SYN_;
    int use_s = !syn && ev.t.sport < ev.t.dport;
    agg_addr(&k, &ev.t, use_s, use_s ? AGG_SRC : AGG_DST);
    k.kind = K_DROP;
    k.family = family;
    k.reason = reason;
    k.flags = ev.tcp_flags;
    k.ip_proto = ev.ip_proto;
    struct agg_val *v = agg_count(&k, ev.hdr.ts_ns);
    if (emit(ctx, &ev, sizeof(ev), K_DROP))
        agg_detail_lost(v);
    return 0;
}
#endif
