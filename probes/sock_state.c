// sock:inet_sock_set_state, filtered in the kernel to TCP LISTEN->CLOSE (K_LISTEN_CLOSE: a listener
// went away) and SYN_SENT->CLOSE (K_REFUSED: a client connection refused or aborted).
// Offsets: -DSS_OFF_<FIELD>. Decoded by auditor/sources/live/decode_sock_state.py.

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
    EV_RESERVE(struct ev_sock_state, ev, kind);
    fill_hdr(&ev->hdr, kind, netns_of_sk(tp_ptr(ctx, SS_OFF_SKADDR)));
    ev->hdr.family = tp_u16(ctx, SS_OFF_FAMILY);
    ev->t.sport = tp_u16(ctx, SS_OFF_SPORT);
    ev->t.dport = tp_u16(ctx, SS_OFF_DPORT);
    read_split_addrs(ctx, &ev->t, ev->hdr.family, SS_OFF_SADDR, SS_OFF_DADDR, SS_OFF_SADDR_V6,
                     SS_OFF_DADDR_V6);
    ev->oldstate = oldstate;
    ev->newstate = newstate;
    EV_SUBMIT(ctx, ev, kind);
    return 0;
}
#endif
