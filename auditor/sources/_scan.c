/* The capture scanner's hot loop: walks pcap records / pcapng blocks in a buffer, decodes each
 * frame down to its first TCP header (through VLAN tags, 802.2 LLC/SNAP, MPLS label stacks, PPPoE
 * sessions, Linux cooked headers, IPv4 options, IPv6 extension headers, VXLAN, Geneve, GRE,
 * IP-in-IP) or ICMP destination-unreachable, appends one fixed-size packed event per
 * SYN/RST/FIN/unreachable and bumps counters.  A malformed IP or TCP header (one that contradicts
 * itself or the frame's length on the wire) is counted and never decoded further.
 *
 * Python (auditor/sources/capture/) owns file headers, chunking, interfaces and output; this file
 * owns only the per-packet loop.  Plain CPython C API.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- event record (mirrored by auditor/sources/capture/layout.py EVENT_DTYPE) ---- */
typedef struct {
    int64_t time_ns;
    uint64_t frame;
    uint8_t src[16], dst[16], reporter[16];
    uint32_t seq, ack, payload_len, encap, iface;
    uint16_t sport, dport, tcp_flags;
    uint8_t kind, family, icmp_type, icmp_code, rfamily, pad;
} event_t;

enum { K_NONE = 0, K_SYN = 1, K_SYNACK = 2, K_RST = 3, K_FIN = 4, K_UNREACH = 5 };
/* encapsulation codes, one nibble each (names in layout.py ENCAP_NAMES) */
enum { E_VLAN = 1, E_VXLAN = 2, E_GENEVE = 3, E_GRE = 4, E_IPIP = 5, E_MPLS = 6, E_PPPOE = 7, E_SNAP = 8 };
/* counters layout (uint64 each; layout.py C_*) */
enum {
    C_FRAMES, C_TCP, C_RST, C_SYN, C_FIN, C_UNREACH, C_SKIPPED, C_UNSUPPORTED,
    C_MALFORMED, C_MALFORMED_FIRST, /* frames with a malformed IP/TCP header; the first one's number */
    C_N
};
/* interface table: int64 per field, IF_N fields per interface */
enum { IF_LINKTYPE, IF_RES_KIND, IF_RES_EXP, IF_OFFSET_S, IF_FRAMES, IF_N = 8 };

#define MAX_DEPTH 12
#define MAX_LABELS 32 /* MPLS label stack entries walked before giving up */

typedef struct {
    event_t ev;
    int depth;
    int found; /* 1 = tcp header reached, 2 = icmp unreachable, -1 = stop */
    int malformed; /* an IP or TCP header that contradicts itself or the frame's length */
    const uint8_t *frame; /* the frame's first captured byte */
    size_t wirelen; /* the frame's length on the wire (>= captured length) */
} ctx_t;

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint32_t rd32(const uint8_t *p, int swap)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}
static inline uint16_t rd16(const uint8_t *p, int swap)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return swap ? __builtin_bswap16(v) : v;
}

static void push_encap(ctx_t *c, uint32_t code)
{
    if ((c->ev.encap >> 28) == 0) c->ev.encap = (c->ev.encap << 4) | code;
}

/* bytes the frame had on the wire from p on (a header may be captured only in part: snaplen) */
static inline size_t wire_left(const ctx_t *c, const uint8_t *p)
{
    size_t off = (size_t)(p - c->frame);
    return c->wirelen > off ? c->wirelen - off : 0;
}

static inline void malformed(ctx_t *c)
{
    c->malformed = 1;
    c->found = -1;
}

static void decode_ether(ctx_t *c, const uint8_t *p, size_t n);
static void decode_ethertype(ctx_t *c, uint16_t type, const uint8_t *p, size_t n, int l2);
static void decode_llc(ctx_t *c, const uint8_t *p, size_t n);
static void decode_ip(ctx_t *c, const uint8_t *p, size_t n);
static void decode_ip4(ctx_t *c, const uint8_t *p, size_t n);
static void decode_ip6(ctx_t *c, const uint8_t *p, size_t n);

static void decode_tcp(ctx_t *c, const uint8_t *p, size_t n, size_t l4len)
{
    /* like tshark: a TCP header counts once its flags are captured and its length is sane */
    event_t *e = &c->ev;
    if (n < 14) { c->found = -1; return; }
    size_t doff = (size_t)(p[12] >> 4) * 4;
    if (doff < 20) { malformed(c); return; } /* data offset < 5: no TCP header to trust */
    e->sport = be16(p);
    e->dport = be16(p + 2);
    e->seq = be32(p + 4);
    e->ack = be32(p + 8);
    e->tcp_flags = (uint16_t)(((p[12] & 0x0f) << 8) | p[13]);
    e->payload_len = l4len > doff ? (uint32_t)(l4len - doff) : 0;
    c->found = 1;
}

/* ICMP/ICMPv6 unreachable: the quoted datagram's 4-tuple, in its original direction */
static void decode_quoted(ctx_t *c, const uint8_t *q, size_t n, int v6)
{
    event_t *e = &c->ev;
    int proto = -1;
    if (!v6) {
        if (n < 20 || (q[0] >> 4) != 4) return;
        size_t ihl = (size_t)(q[0] & 0x0f) * 4;
        if (ihl < 20 || ihl > n) return;
        e->family = 4;
        memset(e->src, 0, 16); memset(e->dst, 0, 16);
        memcpy(e->src, q + 12, 4);
        memcpy(e->dst, q + 16, 4);
        proto = q[9];
        q += ihl; n -= ihl;
    } else {
        if (n < 40 || (q[0] >> 4) != 6) return;
        e->family = 6;
        memcpy(e->src, q + 8, 16);
        memcpy(e->dst, q + 24, 16);
        proto = q[6];
        q += 40; n -= 40;
        for (int i = 0; i < 8; i++) {
            if (proto == 0 || proto == 43 || proto == 60) {
                if (n < 8) return;
                size_t l = ((size_t)q[1] + 1) * 8;
                if (l > n) return;
                proto = q[0]; q += l; n -= l;
            } else if (proto == 44) {
                if (n < 8) return;
                if (be16(q + 2) & 0xfff8) return;
                proto = q[0]; q += 8; n -= 8;
            } else if (proto == 51) {
                if (n < 8) return;
                size_t l = ((size_t)q[1] + 2) * 4;
                if (l > n) return;
                proto = q[0]; q += l; n -= l;
            } else break;
        }
    }
    if ((proto == 6 || proto == 17 || proto == 132) && n >= 4) {
        e->sport = be16(q);
        e->dport = be16(q + 2);
        if (proto == 6 && n >= 8) e->seq = be32(q + 4);
        /* the quoted segment's flags, when quoted that far (RFC 792 asks for 8 bytes; Linux quotes more) */
        if (proto == 6 && n >= 14) e->tcp_flags = (uint16_t)(((q[12] & 0x0f) << 8) | q[13]);
    }
}

static void decode_icmp(ctx_t *c, const uint8_t *p, size_t n, int v6)
{
    if (n < 8) return;
    int unreach = v6 ? (p[0] == 1) : (p[0] == 3);
    if (!unreach) return;
    event_t *e = &c->ev;
    e->icmp_type = p[0];
    e->icmp_code = p[1];
    e->rfamily = e->family;
    memcpy(e->reporter, e->src, 16);
    e->sport = e->dport = 0;
    decode_quoted(c, p + 8, n - 8, v6);
    c->found = 2;
}

static void decode_udp(ctx_t *c, const uint8_t *p, size_t n, size_t l4len)
{
    if (n < 8) return;
    uint16_t dport = be16(p + 2);
    size_t ulen = be16(p + 4);
    if (ulen < 8 || ulen > l4len) return; /* bogus length: tshark stops there too */
    if (ulen < n) n = ulen;
    p += 8; n -= 8;
    if (dport == 4789 || dport == 8472) {
        if (n < 8 || !(p[0] & 0x08)) return;
        push_encap(c, E_VXLAN);
        decode_ether(c, p + 8, n - 8);
    } else if (dport == 6081) {
        if (n < 8 || (p[0] >> 6) != 0) return;
        size_t hl = 8 + (size_t)(p[0] & 0x3f) * 4;
        if (hl > n) return;
        push_encap(c, E_GENEVE);
        uint16_t type = be16(p + 2);
        if (type == 0x6558) decode_ether(c, p + hl, n - hl);
        else decode_ethertype(c, type, p + hl, n - hl, 0);
    }
}

static void decode_gre(ctx_t *c, const uint8_t *p, size_t n)
{
    if (n < 4) return;
    uint16_t flags = be16(p);
    if ((flags & 0x7) != 0) return; /* version 0 only (1 is PPTP's enhanced GRE) */
    uint16_t type = be16(p + 2);
    size_t hl = 4;
    if (flags & 0x8000) hl += 4;
    if (flags & 0x2000) hl += 4;
    if (flags & 0x1000) hl += 4;
    if (flags & 0x4000) return; /* source routing: obsolete */
    if (hl > n) return;
    push_encap(c, E_GRE);
    if (type == 0x883e) { /* WCCP: an optional 4-byte redirect header, then IPv4 */
        if (hl < n && (p[hl] >> 4) != 4) hl += 4;
        if (hl <= n) decode_ip(c, p + hl, n - hl);
    } else if (type == 0x6558) decode_ether(c, p + hl, n - hl);
    else decode_ethertype(c, type, p + hl, n - hl, 0);
}

static void decode_l4(ctx_t *c, int proto, const uint8_t *p, size_t n, size_t l4len, int v6)
{
    switch (proto) {
    case 6: decode_tcp(c, p, n, l4len); break;
    case 1: if (!v6) decode_icmp(c, p, n, 0); break;
    case 58: if (v6) decode_icmp(c, p, n, 1); break;
    case 17: decode_udp(c, p, n, l4len); break;
    case 47: decode_gre(c, p, n); break;
    case 4: case 41: push_encap(c, E_IPIP); decode_ip(c, p, n); break;
    default: break;
    }
}

static void set_addrs(ctx_t *c, const uint8_t *s, const uint8_t *d, int alen, int fam)
{
    event_t *e = &c->ev;
    memset(e->src, 0, 16); memset(e->dst, 0, 16);
    memcpy(e->src, s, (size_t)alen);
    memcpy(e->dst, d, (size_t)alen);
    e->family = (uint8_t)fam;
}

static void decode_ip4(ctx_t *c, const uint8_t *p, size_t n)
{
    size_t wire = wire_left(c, p);
    if (n < 20) { if (wire < 20) malformed(c); return; } /* else: cut by the snaplen */
    size_t ihl = (size_t)(p[0] & 0x0f) * 4;
    if (ihl < 20 || ihl > wire) { malformed(c); return; }
    if (ihl > n) return;
    size_t tot = be16(p + 2);
    if (tot == 0) {
        /* Linux BIG TCP: a GSO packet over 64 KiB says 0 and its length is the frame's.  Below that,
         * total length 0 is a broken header (tshark's ip.tso_support guesses TSO and decodes it). */
        if (wire <= 0xffff) { malformed(c); return; }
        tot = wire;
    }
    if (tot < ihl) { malformed(c); return; }
    int cut = tot > n;          /* not fully captured (or longer than the frame: tshark decodes it) */
    if (tot < n) n = tot;
    uint16_t frag = be16(p + 6);
    if (frag & 0x1fff) return;  /* not the first fragment: no L4 header */
    /* First of several fragments: like tshark, a complete one counts after reassembly (which we do
     * not do), a truncated one is decoded as is. */
    if ((frag & 0x2000) && !cut) return;
    set_addrs(c, p + 12, p + 16, 4, 4);
    decode_l4(c, p[9], p + ihl, n - ihl, tot - ihl, 0);
}

static void decode_ip6(ctx_t *c, const uint8_t *p, size_t n)
{
    size_t wire = wire_left(c, p);
    if (n < 40) { if (wire < 40) malformed(c); return; } /* else: cut by the snaplen */
    size_t plen = be16(p + 4);
    if (plen == 0 && p[6] != 0) {
        /* payload length 0 without a hop-by-hop header (where a jumbogram says its length): Linux
         * BIG TCP over 64 KiB, not decoded (nor by tshark); below that a header that lies, unless
         * it says nothing follows (59) */
        if (p[6] != 59 && wire - 40 <= 0xffff) malformed(c);
        return;
    }
    int cut = plen && plen + 40 > n;
    if (plen && plen + 40 < n) n = plen + 40;
    set_addrs(c, p + 8, p + 24, 16, 6);
    int nh = p[6];
    const uint8_t *q = p + 40;
    size_t m = n - 40;
    size_t l4len = plen ? plen : m;
    for (int i = 0; i < 16; i++) {
        size_t l;
        if (nh == 0 || nh == 43 || nh == 60) {
            if (m < 8) return;
            l = ((size_t)q[1] + 1) * 8;
        } else if (nh == 44) {
            if (m < 8) return;
            uint16_t off = be16(q + 2);
            if (off & 0xfff8) return;   /* not the first fragment */
            if ((off & 1) && !cut) return; /* more fragments: L4 counts after reassembly */
            l = 8;
        } else if (nh == 51) {
            if (m < 8) return;
            l = ((size_t)q[1] + 2) * 4;
        } else {
            break;
        }
        if (l > m) return;
        nh = q[0];
        q += l; m -= l;
        l4len = l4len > l ? l4len - l : 0;
    }
    if (nh == 50 || nh == 59) return;
    decode_l4(c, nh, q, m, l4len, 1);
}

static void decode_ip(ctx_t *c, const uint8_t *p, size_t n)
{
    if (n < 1 || ++c->depth > MAX_DEPTH) return;
    int v = p[0] >> 4;
    if (v == 4) decode_ip4(c, p, n);
    else if (v == 6) decode_ip6(c, p, n);
}

/* MPLS (RFC 3032): label stack entries up to the bottom-of-stack bit, then IPv4 or IPv6 by the
 * first nibble (RFC 4928; 0 is a pseudowire control word, 1 an associated channel: not IP) */
static void decode_mpls(ctx_t *c, const uint8_t *p, size_t n)
{
    uint32_t label;
    int i = 0;
    do {
        if (n < 4 || i++ == MAX_LABELS) return;
        label = be32(p) >> 12;
        p += 4; n -= 4;
    } while (!(p[-2] & 0x01));
    if (n < 1 || label == 13) return; /* label 13 (GAL): an associated channel follows */
    push_encap(c, E_MPLS);
    int v = p[0] >> 4;
    if (v == 4) decode_ip4(c, p, n);
    else if (v == 6) decode_ip6(c, p, n);
}

/* PPP protocol field (RFC 1661, 2 bytes or 1 if compressed): IPv4 0x0021, IPv6 0x0057 */
static void decode_ppp(ctx_t *c, const uint8_t *p, size_t n)
{
    if (n < 2) return;
    uint16_t proto = p[0];
    size_t hl = 1;
    if (!(proto & 1)) { proto = be16(p); hl = 2; }
    p += hl; n -= hl;
    if (!n) return;
    if (proto == 0x0021) { if ((p[0] >> 4) == 4) decode_ip4(c, p, n); }
    else if (proto == 0x0057) { if ((p[0] >> 4) == 6) decode_ip6(c, p, n); }
}

/* PPPoE session stage (RFC 2516): ver/type, code, session id, length of the PPP frame */
static void decode_pppoe(ctx_t *c, const uint8_t *p, size_t n)
{
    if (n < 8) return;
    size_t len = be16(p + 4);
    p += 6; n -= 6;
    if (len < n) n = len; /* Ethernet padding after the PPP frame */
    push_encap(c, E_PPPOE);
    decode_ppp(c, p, n);
}

/* type: an ethertype, or with l2 (it follows an Ethernet or VLAN header's type/length field) a
 * value <= 1500 is an 802.3 length and an 802.2 LLC header follows */
static void decode_ethertype(ctx_t *c, uint16_t type, const uint8_t *p, size_t n, int l2)
{
    if (++c->depth > MAX_DEPTH) return;
    for (int i = 0; i < 16 && (type == 0x8100 || type == 0x88a8 || type == 0x9100); i++) {
        if (n < 4) return;
        push_encap(c, E_VLAN);
        type = be16(p + 2);
        p += 4; n -= 4;
        l2 = 1;
    }
    if (type == 0x0800) { if (n && (p[0] >> 4) == 4) decode_ip4(c, p, n); }
    else if (type == 0x86dd) { if (n && (p[0] >> 4) == 6) decode_ip6(c, p, n); }
    else if (type == 0x8847 || type == 0x8848) decode_mpls(c, p, n);
    else if (type == 0x8864) decode_pppoe(c, p, n);
    else if (type <= 1500 && l2) decode_llc(c, p, type < n ? type : n);
}

/* 802.2 LLC with a SNAP header (DSAP/SSAP 0xAA, UI 0x03) whose OUI says the protocol id is an
 * ethertype: 00-00-00 (RFC 1042) or 00-00-F8 (802.1H bridge tunnel) */
static void decode_llc(ctx_t *c, const uint8_t *p, size_t n)
{
    if (n < 8 || p[0] != 0xaa || p[1] != 0xaa || p[2] != 0x03) return;
    if (p[3] != 0 || p[4] != 0 || (p[5] != 0 && p[5] != 0xf8)) return;
    push_encap(c, E_SNAP);
    decode_ethertype(c, be16(p + 6), p + 8, n - 8, 0);
}

static void decode_ether(ctx_t *c, const uint8_t *p, size_t n)
{
    if (n < 14) return;
    decode_ethertype(c, be16(p + 12), p + 14, n - 14, 1);
}

/* Linux cooked header's protocol: an ethertype, or 0x0004 for an 802.2 LLC frame */
static void decode_sll(ctx_t *c, uint16_t proto, const uint8_t *p, size_t n)
{
    if (proto == 0x0004) decode_llc(c, p, n);
    else decode_ethertype(c, proto, p, n, 0);
}

/* returns 0 if the link type is not supported */
static int decode_link(ctx_t *c, int64_t lt, const uint8_t *p, size_t n)
{
    switch (lt) {
    case 1: decode_ether(c, p, n); return 1;
    case 113: if (n >= 16) decode_sll(c, be16(p + 14), p + 16, n - 16); return 1;
    case 276: if (n >= 20) decode_sll(c, be16(p), p + 20, n - 20); return 1;
    case 101: case 12: case 14: decode_ip(c, p, n); return 1;
    case 228: if (n && (p[0] >> 4) == 4) decode_ip4(c, p, n); return 1;
    case 229: if (n && (p[0] >> 4) == 6) decode_ip6(c, p, n); return 1;
    case 0: case 108: {
        if (n < 4) return 1;
        uint32_t af;
        if (lt == 108) af = be32(p);
        else {
            uint32_t le = rd32(p, 0), bs = __builtin_bswap32(le);
            af = (le & 0xffff0000u) ? bs : le; /* AF values are small: pick the order that fits */
        }
        if (af == 2) { if (n > 4 && (p[4] >> 4) == 4) decode_ip4(c, p + 4, n - 4); }
        else if (af == 24 || af == 28 || af == 30) { if (n > 4 && (p[4] >> 4) == 6) decode_ip6(c, p + 4, n - 4); }
        return 1;
    }
    default: return 0;
    }
}

/* ---- output buffer ---- */
typedef struct {
    event_t *ev;
    Py_ssize_t n, cap;
} evbuf_t;

static int evbuf_push(evbuf_t *b, const event_t *e)
{
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 1024;
        event_t *nv = PyMem_Realloc(b->ev, (size_t)cap * sizeof(event_t));
        if (!nv) return -1;
        b->ev = nv; b->cap = cap;
    }
    b->ev[b->n++] = *e;
    return 0;
}

/* decode one frame, count it, maybe append an event; returns -1 on memory error */
static int handle_frame(const uint8_t *p, size_t caplen, size_t wirelen, int64_t lt, int64_t ts,
                        uint64_t frame, uint32_t iface, uint64_t *cnt, evbuf_t *out)
{
    ctx_t c;
    memset(&c, 0, sizeof c);
    c.frame = p;
    c.wirelen = wirelen > caplen ? wirelen : caplen;
    cnt[C_FRAMES]++;
    if (!decode_link(&c, lt, p, caplen)) { cnt[C_UNSUPPORTED]++; return 0; }
    if (c.malformed) {
        if (!cnt[C_MALFORMED]++) cnt[C_MALFORMED_FIRST] = frame;
        return 0;
    }
    if (c.found == 1) {
        uint16_t f = c.ev.tcp_flags;
        cnt[C_TCP]++;
        if (f & 0x04) { cnt[C_RST]++; c.ev.kind = K_RST; }
        if ((f & 0x12) == 0x02) cnt[C_SYN]++;
        if (f & 0x01) cnt[C_FIN]++;
        if (!c.ev.kind) {
            if (f & 0x02) c.ev.kind = (f & 0x10) ? K_SYNACK : K_SYN;
            else if (f & 0x01) c.ev.kind = K_FIN;
        }
    } else if (c.found == 2) {
        cnt[C_UNREACH]++;
        c.ev.kind = K_UNREACH;
    }
    if (c.ev.kind) {
        c.ev.time_ns = ts;
        c.ev.frame = frame;
        c.ev.iface = iface;
        if (evbuf_push(out, &c.ev) < 0) return -1;
    }
    return 0;
}

static PyObject *finish(evbuf_t *out, Py_ssize_t pos, uint64_t frames, int status)
{
    PyObject *ev = PyBytes_FromStringAndSize((const char *)out->ev, out->n * (Py_ssize_t)sizeof(event_t));
    PyMem_Free(out->ev);
    if (!ev) return NULL;
    return Py_BuildValue("(nKNi)", pos, (unsigned long long)frames, ev, status);
}

enum { S_NEED_MORE = 0, S_OTHER_BLOCK = 1, S_CORRUPT = 2 };

/* scan_pcap(buf, pos, swapped, nsec, linktype, first_frame, counters) ->
 *   (pos, frames, events_bytes, status)  status: 0 need more data, 2 corrupt record header */
static PyObject *scan_pcap(PyObject *self, PyObject *args)
{
    Py_buffer buf, cbuf;
    Py_ssize_t pos;
    int swap, nsec;
    long long lt;
    unsigned long long frame0;
    unsigned long maxcap;
    if (!PyArg_ParseTuple(args, "y*nppLKkw*", &buf, &pos, &swap, &nsec, &lt, &frame0, &maxcap, &cbuf))
        return NULL;
    if (cbuf.len < (Py_ssize_t)(C_N * sizeof(uint64_t))) {
        PyBuffer_Release(&buf); PyBuffer_Release(&cbuf);
        PyErr_SetString(PyExc_ValueError, "counters buffer too small");
        return NULL;
    }
    const uint8_t *b = buf.buf;
    Py_ssize_t len = buf.len;
    uint64_t *cnt = cbuf.buf;
    evbuf_t out = {0};
    uint64_t frames = 0;
    int status = S_NEED_MORE;
    int64_t mul = nsec ? 1 : 1000;
    Py_BEGIN_ALLOW_THREADS
    while (pos >= 0 && len - pos >= 16) {
        const uint8_t *h = b + pos;
        uint32_t sec = rd32(h, swap), frac = rd32(h + 4, swap), incl = rd32(h + 8, swap);
        uint32_t orig = rd32(h + 12, swap);
        if (incl > maxcap) { status = S_CORRUPT; break; }
        if ((Py_ssize_t)incl > len - pos - 16) break;
        int64_t ts = (int64_t)sec * 1000000000LL + (int64_t)frac * mul;
        if (handle_frame(h + 16, incl, orig, lt, ts, frame0 + frames + 1, 0, cnt, &out) < 0) {
            status = -1; break;
        }
        frames++;
        pos += 16 + (Py_ssize_t)incl;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf); PyBuffer_Release(&cbuf);
    if (status < 0) { PyMem_Free(out.ev); return PyErr_NoMemory(); }
    return finish(&out, pos, frames, status);
}

static int64_t pcapng_time(const int64_t *itf, uint64_t ts)
{
    int64_t kind = itf[IF_RES_KIND], exp = itf[IF_RES_EXP];
    __int128 ns;
    if (kind == 0) { /* 10^-exp seconds */
        if (exp <= 9) {
            int64_t m = 1;
            for (int64_t i = exp; i < 9; i++) m *= 10;
            ns = (__int128)ts * m;
        } else {
            __int128 d = 1;
            for (int64_t i = 9; i < exp && i < 40; i++) d *= 10;
            ns = (__int128)ts / d;
        }
    } else { /* 2^-exp seconds */
        ns = exp >= 64 ? 0 : ((__int128)ts * 1000000000) >> exp;
    }
    ns += (__int128)itf[IF_OFFSET_S] * 1000000000;
    return (int64_t)ns;
}

/* scan_pcapng(buf, pos, swapped, ifaces, first_frame, maxblock, counters) ->
 *   (pos, frames, events_bytes, status) status: 0 need more, 1 a block Python must read, 2 corrupt */
static PyObject *scan_pcapng(PyObject *self, PyObject *args)
{
    Py_buffer buf, ibuf, cbuf;
    Py_ssize_t pos;
    int swap;
    unsigned long long frame0;
    unsigned long maxblock;
    if (!PyArg_ParseTuple(args, "y*npw*Kkw*", &buf, &pos, &swap, &ibuf, &frame0, &maxblock, &cbuf))
        return NULL;
    if (cbuf.len < (Py_ssize_t)(C_N * sizeof(uint64_t))) {
        PyBuffer_Release(&buf); PyBuffer_Release(&ibuf); PyBuffer_Release(&cbuf);
        PyErr_SetString(PyExc_ValueError, "counters buffer too small");
        return NULL;
    }
    const uint8_t *b = buf.buf;
    Py_ssize_t len = buf.len;
    int64_t *ifs = ibuf.buf;
    Py_ssize_t nif = ibuf.len / (Py_ssize_t)(IF_N * sizeof(int64_t));
    uint64_t *cnt = cbuf.buf;
    evbuf_t out = {0};
    uint64_t frames = 0;
    int status = S_NEED_MORE;
    Py_BEGIN_ALLOW_THREADS
    while (pos >= 0 && len - pos >= 12) {
        const uint8_t *h = b + pos;
        uint32_t type = rd32(h, swap), blen = rd32(h + 4, swap);
        if (type != 6 && type != 3 && type != 2) { status = S_OTHER_BLOCK; break; }
        if (blen < 12 || (blen & 3) || blen > maxblock) { status = S_CORRUPT; break; }
        if ((Py_ssize_t)blen > len - pos) break;
        uint32_t ifid = 0, caplen, wirelen;
        uint64_t tsraw = 0;
        const uint8_t *data;
        size_t room;
        int has_ts = 1;
        if (type == 3) {
            uint32_t orig = rd32(h + 8, swap);
            room = blen - 16;
            caplen = orig < room ? orig : (uint32_t)room;
            wirelen = orig;
            data = h + 12;
            has_ts = 0;
        } else {
            if (blen < 32) { status = S_CORRUPT; break; }
            ifid = type == 6 ? rd32(h + 8, swap) : rd16(h + 8, swap);
            tsraw = ((uint64_t)rd32(h + 12, swap) << 32) | rd32(h + 16, swap);
            caplen = rd32(h + 20, swap);
            wirelen = rd32(h + 24, swap);
            room = blen - 32;
            data = h + 28;
            if (caplen > room) { status = S_CORRUPT; break; }
        }
        frames++;
        if ((Py_ssize_t)ifid >= nif) {
            cnt[C_FRAMES]++;
            cnt[C_SKIPPED]++;
        } else {
            int64_t *itf = ifs + (Py_ssize_t)ifid * IF_N;
            itf[IF_FRAMES]++;
            int64_t ts = has_ts ? pcapng_time(itf, tsraw) : 0;
            if (handle_frame(data, caplen, wirelen, itf[IF_LINKTYPE], ts, frame0 + frames, ifid, cnt,
                             &out) < 0) {
                status = -1; break;
            }
        }
        pos += blen;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf); PyBuffer_Release(&ibuf); PyBuffer_Release(&cbuf);
    if (status < 0) { PyMem_Free(out.ev); return PyErr_NoMemory(); }
    return finish(&out, pos, frames, status);
}

static PyMethodDef methods[] = {
    {"scan_pcap", scan_pcap, METH_VARARGS, "Walk pcap records in a buffer; see _scan.c."},
    {"scan_pcapng", scan_pcapng, METH_VARARGS, "Walk pcapng packet blocks in a buffer; see _scan.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "Capture scanner hot loop (C).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyModule_AddIntConstant(m, "EVENT_SIZE", (long)sizeof(event_t));
    PyModule_AddIntConstant(m, "COUNTERS", C_N);
    PyModule_AddIntConstant(m, "IFACE_FIELDS", IF_N);
    return m;
}
