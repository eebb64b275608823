// sock:inet_sock_set_state, filtered in the kernel to TCP LISTEN->CLOSE (K_LISTEN_CLOSE: a listener
// went away) and SYN_SENT->CLOSE (K_REFUSED: a client connection refused or aborted).
// Offsets: -DSS_OFF_<FIELD>. Decoded by auditor/sources/live/decode_sock_state.py; counted in the
// aggregates (aggregates.h) under the server side: the address tried (refused), the listener's own.

#include "aggregates.h"

#define TCP_SYN_SENT_ 2
#define TCP_CLOSE_ 7
#define TCP_LISTEN_ 10
#define IPPROTO_TCP_ 6

struct ev_sock_state {
    struct ev_hdr hdr;
    struct ev_tuple t;  // the socket's local (s) and remote (d) side
    u32 oldstate;
    u32 newstate;
};

#ifdef TP_INET_SOCK_SET_STATE
static __always_inline void fill_sock_state(void *ctx, struct ev_sock_state *ev, struct agg_key *k, u32 kind,
                                            u32 oldstate, u32 newstate) {
    fill_hdr(&ev->hdr, kind, netns_of_sk(tp_ptr(ctx, SS_OFF_SKADDR)));
    ev->hdr.family = tp_u16(ctx, SS_OFF_FAMILY);
    ev->t.sport = tp_u16(ctx, SS_OFF_SPORT);
    ev->t.dport = tp_u16(ctx, SS_OFF_DPORT);
    read_split_addrs(ctx, &ev->t, ev->hdr.family, SS_OFF_SADDR, SS_OFF_DADDR, SS_OFF_SADDR_V6,
                     SS_OFF_DADDR_V6);
    ev->oldstate = oldstate;
    ev->newstate = newstate;
    int listener = kind == K_LISTEN_CLOSE;
    agg_addr(k, &ev->t, listener, listener ? AGG_SRC : AGG_DST);
    k->kind = kind;
    k->family = ev->hdr.family;
    k->state = oldstate;
    k->ip_proto = IPPROTO_TCP_;
}

int on_inet_sock_set_state(void *ctx) {
    u32 newstate = tp_u32(ctx, SS_OFF_NEWSTATE);
    if (newstate != TCP_CLOSE_)
        return 0;
    u32 oldstate = tp_u32(ctx, SS_OFF_OLDSTATE);
    u32 kind;
    if (oldstate == TCP_LISTEN_)
        kind = K_LISTEN_CLOSE;
    else if (oldstate == TCP_SYN_SENT_)
        kind = K_REFUSED;
    else
        return 0;
#ifdef SS_HAS_PROTOCOL
    if (tp_u16(ctx, SS_OFF_PROTOCOL) != IPPROTO_TCP_)
        return 0;
#endif
    struct agg_key k = {};
#ifdef USE_RINGBUF
    struct ev_sock_state *ev = ev_reserve(sizeof(struct ev_sock_state));
    if (ev) {
        __builtin_memset(ev, 0, sizeof(struct ev_sock_state));
        fill_sock_state(ctx, ev, &k, kind, oldstate, newstate);
        agg_count(&k, ev->hdr.ts_ns);
        ev_submit(ev, kind);
        return 0;
    }
#endif
    struct ev_sock_state s = {};
    fill_sock_state(ctx, &s, &k, kind, oldstate, newstate);
    struct agg_val *v = agg_count(&k, s.hdr.ts_ns);
    if (emit(ctx, &s, sizeof(s), kind))
        agg_detail_lost(v);
    return 0;
}
#endif
