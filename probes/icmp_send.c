// icmp:icmp_send (IPv4; the kernel has no ICMPv6 counterpart), filtered in the kernel to
// destination unreachable (type 3) -> K_ICMP_UNREACH. The tuple is the quoted datagram's, in its
// original direction, read from the offending skb's IP header (the tracepoint itself only
// decodes UDP ports); falls back to the tracepoint's fields. Offsets: -DIS_OFF_<FIELD>.
// Decoded by auditor/sources/live/decode_icmp_send.py; counted in the aggregates (aggregates.h) under
// the quoted datagram's destination, with the ICMP code as the reason.

#include "aggregates.h"

struct ev_icmp {
    struct ev_hdr hdr;
    struct ev_tuple t;
    u32 type;
    u32 code;
    u8 ip_proto;     // protocol of the quoted datagram (0: unknown)
    u8 tcp_flags;
    u16 _pad;
    u32 _pad2;
};

#ifdef TP_ICMP_SEND
int on_icmp_send(void *ctx) {
    u32 type = tp_u32(ctx, IS_OFF_TYPE);
    if (type != 3)
        return 0;
    struct ev_icmp ev = {};
    const void *skb = tp_ptr(ctx, IS_OFF_SKBADDR);
    fill_hdr(&ev.hdr, K_ICMP_UNREACH, netns_of_skb(skb));
    ev.hdr.family = AF_INET_;
    ev.type = type;
    ev.code = tp_u32(ctx, IS_OFF_CODE);
    ev.ip_proto = read_skb_tuple(skb, AF_INET_, &ev.t, &ev.tcp_flags);
    if (!ev.ip_proto) {
        tp_bytes4(ev.t.saddr, ctx, IS_OFF_SADDR);
        tp_bytes4(ev.t.daddr, ctx, IS_OFF_DADDR);
        ev.t.sport = tp_u16(ctx, IS_OFF_SPORT);
        ev.t.dport = tp_u16(ctx, IS_OFF_DPORT);
    }
    struct agg_key k = {};
    agg_addr(&k, &ev.t, 0, AGG_DST);
    k.kind = K_ICMP_UNREACH;
    k.family = AF_INET_;
    k.reason = ev.code;
    k.flags = ev.tcp_flags;
    k.ip_proto = ev.ip_proto;
    struct agg_val *v = agg_count(&k, ev.hdr.ts_ns);
    if (emit(ctx, &ev, sizeof(ev), K_ICMP_UNREACH))
        agg_detail_lost(v);
    return 0;
}
#endif
