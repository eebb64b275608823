// In-kernel aggregates: exact event counts, whatever the output channel lost. Included by every probe
// family (after common.h). Layout mirrored by auditor/sources/live/decode_aggregates.py.
//
// Every event is counted in `aggregates` (per-CPU hash) under what a report counts it by: the
// connection's server side (address and port), the kind, the reason, the TCP state, the TCP flags
// (of the packet a socketless RST answered, of a dropped or quoted packet), the IP protocol, and a
// time bucket (bpf_ktime_get_ns() / AGG_BUCKET_NS). The detail event goes to the ring buffer as
// before; when it had no room, the key's `detail_lost` says so: counts are exact, detail is sampled.
// The agent reads a bucket once it is over (no program writes to it any more) and deletes it.
// An event that finds the map full is counted in `agg_full[kind]` (the reader fell behind).

#ifndef AUDITOR_AGGREGATES_H
#define AUDITOR_AGGREGATES_H

#ifndef AGG_BUCKET_NS
#define AGG_BUCKET_NS 100000000ULL  // 100 ms
#endif
#ifndef AGG_ENTRIES
#define AGG_ENTRIES 16384
#endif
#define AGG_DST 0  // addr:port is the destination of the event's packet (wire direction)
#define AGG_SRC 1  // ... its source
#define TCP_FLAG_SYN_ 0x02
#define TCP_FLAG_ACK_ 0x10

struct agg_key {
    u8 addr[16];   // the server side of the connection (IPv4 in the first 4 bytes)
    u32 bucket;    // bpf_ktime_get_ns() / AGG_BUCKET_NS
    u32 reason;    // rst_sent: enum sk_rst_reason; drop: enum skb_drop_reason; icmp_unreachable: code
    u16 port;      // host byte order
    u8 kind;       // K_*
    u8 family;     // AF_INET_ / AF_INET6_
    u8 state;      // TCP state: of the resetting socket (0: none), the reset one, or before the close
    u8 flags;      // TCP flags: of the packet a socketless RST answered, of the dropped or quoted packet
    u8 side;       // AGG_SRC / AGG_DST
    u8 ip_proto;
};  // 32 bytes, no padding

struct agg_val {
    u64 events;       // every event of the key
    u64 detail_lost;  // of which the detail event found no room in the output channel
};

BPF_PERCPU_HASH(aggregates, struct agg_key, struct agg_val, AGG_ENTRIES);
BPF_PERCPU_ARRAY(agg_full, u64, N_KINDS);

// The key's address and port: the tuple's s end (use_s) or its d end; `side` names that end on the wire.
static __always_inline void agg_addr(struct agg_key *k, const struct ev_tuple *t, int use_s, u8 side) {
    if (use_s) {
        __builtin_memcpy(k->addr, t->saddr, 16);
        k->port = t->sport;
    } else {
        __builtin_memcpy(k->addr, t->daddr, 16);
        k->port = t->dport;
    }
    k->side = side;
}

// Count one event of `k` (its bucket from the event's own timestamp). Returns the value, to mark the
// detail event lost in; 0 when the map was full (counted in agg_full).
static __always_inline struct agg_val *agg_count(struct agg_key *k, u64 ts_ns) {
    struct agg_val zero = {};
    k->bucket = ts_ns / AGG_BUCKET_NS;
    struct agg_val *v = aggregates.lookup_or_try_init(k, &zero);
    if (!v) {
        u32 idx = k->kind;
        u64 *n = agg_full.lookup(&idx);
        if (n)
            *n += 1;
        return 0;
    }
    v->events += 1;
    return v;
}

static __always_inline void agg_detail_lost(struct agg_val *v) {
    if (v)
        v->detail_lost += 1;
}

#endif
