/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Layouts shared by the XDP program and the Go side (maps/ via bpf2go's
 * generated types). Change a struct here and `make generate` regenerates the
 * Go types; nothing else should describe these layouts.
 */
#ifndef XDPFLOW_H
#define XDPFLOW_H

#include <linux/types.h>

/* Constants Go needs too are enums, so that bpf2go generates them. */

/* Compile-time bounds. The subtable loop is bounded by XF_MAX_SUBTABLES; a
 * device may be enabled with a lower limit, never a higher one. */
enum xf_limits {
	XF_MAX_SUBTABLES = 256,
	XF_MAX_ACTIONS = 8,
	XF_MAX_VLAN_TAGS = 2,
	XF_MAX_IPV6_EXT_HDRS = 8,
	XF_RULE_TEXT_MAX = 464,
	XF_META_MAGIC = 0x78646640,    /* "xdf@": layout version of pinned state */
	XF_NARROW_WORDS = 6,	       /* key words of a narrow subtable's flows */
	XF_CACHE_SET_BITS = 11,	       /* default log2(sets per CPU): 4096 entries */
	XF_CACHE_SET_BITS_MIN = 7,     /* 256 entries per CPU */
	XF_CACHE_SET_BITS_MAX = 19,    /* 1,048,576 entries per CPU */
	XF_CACHE_WAYS = 2,	       /* entries per set when the cache key is narrow */
	XF_CACHE_WORDS = 6,	       /* key words of a narrow cache entry */
	XF_CACHE_NO_FLOW = 0xFFFFFFFF, /* a cached miss, in xf_flow.action_set */
	XF_LIST_BUFFERS = 8,	       /* subtable list buffers, a power of two */
	XF_ADDR_BYTES = 4,	       /* address bytes the list has rows for */
};

/* key.ip_frag bits: flower's ip_flags (FLOW_DIS_IS_FRAGMENT/FIRST_FRAG). */
enum xf_frag {
	XF_FRAG_IS_FRAGMENT = 0x01,
	XF_FRAG_FIRST = 0x02,
};

/*
 * The flow key: everything a rule can match. Network-order fields stay in
 * network order. Fields a packet does not have are zero (a rule that can
 * match them always also matches the ethertype that implies them).
 *
 * The struct is a whole number of 64-bit words so that masking is a fixed
 * run of word ANDs.
 */
struct xf_key {
	__u32 ifindex; /* ingress ifindex */
	__u8 eth_dst[6];
	__u8 eth_src[6];
	/* eth_type[0] is the ethertype after the MACs (tc's "protocol", a TPID
	 * when tagged); [1] follows the first VLAN tag (vlan_ethtype), [2] the
	 * second (cvlan_ethtype). */
	__be16 eth_type[3];
	__be16 vlan_tci[2]; /* outer (vlan_*) and inner (cvlan_*) tag */
	__u8 ip_proto;	    /* for ARP: the low byte of the opcode, as flower */
	__u8 ip_tos;	    /* IPv4 TOS, IPv6 traffic class */
	__u8 ip_ttl;	    /* IPv4 TTL, IPv6 hop limit */
	__u8 ip_frag;	    /* XF_FRAG_* */
	__be16 tcp_flags;   /* low 12 bits of the TCP flag word */
	__u8 src_ip[16];    /* IPv4 and ARP sender IP in the first 4 bytes */
	__u8 dst_ip[16];    /* IPv4 and ARP target IP in the first 4 bytes */
	__be16 src_port;    /* TCP, UDP, SCTP */
	__be16 dst_port;
	__u8 icmp_type; /* ICMP and ICMPv6 */
	__u8 icmp_code;
	__u8 arp_sha[6];
	__u8 arp_tha[6];
	/* The ethertype the hooks see: skb->protocol once the kernel has
	 * taken the outer VLAN tag off (eth_type[1] when tagged, else
	 * eth_type[0]), which nft's meta protocol and payload matches go
	 * by. One nft rule, tagged or not, is then one entry. */
	__be16 l3_proto;
	__u8 pad[4];
} __attribute__((aligned(8)));

#define XF_KEY_WORDS (sizeof(struct xf_key) / 8)

/* What a lookup answers: the rule's action set and counter slot. */
struct xf_answer {
	__u32 action_set; /* index into action_sets */
	__u32 stats;	  /* index into rule_stats; one per rule */
};

/* Value of the flows hash maps: the answer (as in struct xf_answer), the
 * rank of its rule in the lookup order (lower wins: TC's before nft's, then
 * by priority, then by the creation of the rule's mask group), and the
 * port ranges a packet's ports must be in as well (host order, inclusive;
 * 0-65535 where the flow has none). A subtable whose flows have ranges
 * leaves the ports out of its mask: one flow holds a whole range. */
struct xf_flow {
	__u32 action_set;
	__u32 stats;
	__u64 rank;
	__u16 sport_lo;
	__u16 sport_hi;
	__u16 dport_lo;
	__u16 dport_hi;
};

/* Value of flows_ranged: a flow, and the IPv4 address ranges a packet's
 * addresses must be in as well (host order, inclusive; 0-0xffffffff where
 * the flow has none). The subtable's mask then has fewer address bits
 * than the rule: flows of rules with longer prefixes share the subtable
 * of a shorter one, each the only flow of its masked key. */
struct xf_ranged_flow {
	struct xf_flow flow;
	__u32 saddr_lo;
	__u32 saddr_hi;
	__u32 daddr_lo;
	__u32 daddr_hi;
};

/* One subtable: every flow in it was installed with this mask, by rules of
 * any priority. Each flow carries the rank of the rule it answers for;
 * bound is at most the rank of every flow in the subtable, and the list is
 * sorted by it, so a search stops at the first subtable whose bound cannot
 * beat the best rank found.
 *
 * A mask with at most XF_NARROW_WORDS nonzero key words makes a narrow
 * subtable: its flows live in flows_narrow under just those words
 * (word_idx, ascending; the rest of the key is zero under the mask
 * anyway), so each lookup hashes and compares 56 bytes instead of 96.
 * Wider masks (narrow_words 0) use flows with the whole masked key. */
struct xf_subtable {
	__u32 id; /* part of the flows map key */
	/* The subtable's one flow is inline_words and inline_flow, and no
	 * flows map is looked up for it: a narrow subtable of one flow (as
	 * one rule per mask makes) is searched at the cost of compares. User
	 * space lists a subtable so only while the flow is the flows map's
	 * too and the change is done with it. */
	__u8 inlined;
	__u8 pad0[3];
	__u64 bound; /* no flow of the subtable has a lower rank */
	/* Spans: no flow of the subtable matches a key whose first 4 bytes
	 * of src_ip (dst_ip), read big-endian, are outside saddr_lo..saddr_hi
	 * (daddr_lo..daddr_hi), so the search skips the lookup for such a
	 * key. Empty (lo above hi) until the subtable has flows. Beside the
	 * bound: a skipped subtable costs one cache line of the list. */
	__u32 saddr_lo;
	__u32 saddr_hi;
	__u32 daddr_lo;
	__u32 daddr_hi;
	__u8 narrow_words; /* 0: wide */
	__u8 word_idx[XF_NARROW_WORDS];
	/* Its flows carry ranges: narrow, in flows_ranged (port and IPv4
	 * address ranges); wide, in flows (port ranges). Nonzero: 1 when
	 * nft's compiler chose them, 2 when user space's table did, for tc
	 * filters (3: those checking ports alone); the program reads every
	 * kind alike. */
	__u8 ranged;
	struct xf_key mask;
	__u64 inline_words[XF_NARROW_WORDS]; /* the flow's key words, masked */
	struct xf_ranged_flow inline_flow;   /* address ranges whole, if none */
};

/* The list of subtables the program searches, in order of their bounds;
 * the hit of the lowest rank wins. Replaced whole (a ring of buffers, see subtable_lists), never edited
 * while packets can see it.
 *
 * union_mask is the OR of every subtable's mask. No search result depends
 * on a key bit outside it, so the exact-match cache is keyed by
 * key & union_mask: packets that differ only in bits no rule looks at
 * (the source port, when every rule looks at destinations) share one
 * entry, as a megaflow does in Open vSwitch. generation is unique to each
 * published list; cache entries carry the one they were made under. */
struct xf_subtable_list {
	__u32 count;
	__u32 generation;
	/* The cache key. When union_mask covers at most XF_CACHE_WORDS of the
	 * key's words (cache_words nonzero: how many), it is just those words,
	 * key[cache_word_idx[i]] & cache_mask[i]; the unused slots name a word
	 * union_mask has zero, with a zero cache_mask. Otherwise it is the
	 * whole key & union_mask. Everything a narrow lookup reads of the list
	 * is in these first 64 bytes. */
	__u8 cache_words;
	__u8 cache_word_idx[XF_CACHE_WORDS];
	__u8 pad;
	__u64 cache_mask[XF_CACHE_WORDS];
	struct xf_key union_mask;
	/* No rank: all ones, as user space writes it. The search starts from
	 * it, read from here rather than written as a constant so that the
	 * verifier holds it as an unknown value, like the ranks that replace
	 * it: the search's states then agree whether or not a subtable hit,
	 * and the verifier prunes them. */
	__u64 no_rank;
	/* Bit i % 64 of by_saddr_byte[i / 64][k][b] (by_daddr_byte) is clear
	 * when no flow of subtables[i] matches a key whose byte k of src_ip
	 * (dst_ip) is b, byte 0 the top: a few flows far apart span most
	 * addresses but few values of the top byte, and flows under one
	 * prefix (a /24 each of a /16) differ in the bytes after it. A packet
	 * searches only the subtables that all 8 of its rows have, and does
	 * not read the others' entries. The word of the bits comes first, so
	 * that a list of at most 64 subtables has all its rows in 16 KB. */
	__u64 by_saddr_byte[XF_MAX_SUBTABLES / 64][XF_ADDR_BYTES][256];
	__u64 by_daddr_byte[XF_MAX_SUBTABLES / 64][XF_ADDR_BYTES][256];
	struct xf_subtable subtables[XF_MAX_SUBTABLES];
};

/* Key of the flows hash map: which subtable, and the packet key under that
 * subtable's mask. */
struct xf_flow_key {
	__u32 subtable;
	__u32 pad;
	struct xf_key key;
};

/* Key of the flows_narrow hash map: which subtable, and the key words its
 * mask covers (xf_subtable.word_idx), masked; unused words zero. */
struct xf_narrow_flow_key {
	__u32 subtable;
	__u32 pad;
	__u64 words[XF_NARROW_WORDS];
};

enum xf_action_op {
	XF_ACT_NONE = 0,
	XF_ACT_DROP,	 /* terminal: XDP_DROP */
	XF_ACT_PASS,	 /* terminal: XDP_PASS to TC and the stack */
	XF_ACT_REDIRECT, /* terminal: out of ifindex via the devmap */
	XF_ACT_TX,	 /* terminal: back out of the ingress device */
	XF_ACT_VLAN_PUSH,
	XF_ACT_VLAN_POP,
	XF_ACT_VLAN_MODIFY,
	XF_ACT_SET_ETH_SRC,
	XF_ACT_SET_ETH_DST,
};

/* vlan action flags */
enum xf_vlan_flags {
	XF_VLAN_SET_PRIO = 0x01, /* modify: priority was given */
};

struct xf_action {
	__u8 op;	   /* enum xf_action_op */
	__u8 flags;	   /* XF_VLAN_* */
	__be16 vlan_proto; /* push, modify */
	__u16 vlan_id;	   /* push, modify (host order) */
	__u8 vlan_prio;
	__u8 pad;
	__u32 ifindex; /* redirect */
	__u8 mac[6];   /* set eth src/dst */
	__u8 pad2[2];
};

/* An action list, run in order. A list without a terminal action ends in
 * XDP_PASS, like a TC filter whose last action is "pipe".
 *
 * keepalive_ms: a rule that TC holds as well (a mirrored filter) lets one
 * packet per this interval and CPU go on to the kernel instead, unchanged,
 * where TC's copy of the filter handles it the same way. That keeps the
 * kernel's counters and last-used time moving, so whoever ages flows by
 * them (Open vSwitch's revalidator deletes flows idle for 10 s) sees a
 * flow with traffic as used. 0: never. */
struct xf_action_set {
	__u32 count;
	__u32 keepalive_ms;
	struct xf_action actions[XF_MAX_ACTIONS];
};

/* Per-rule, per-CPU counters. Bytes count what tc counts at ingress: the
 * frame without its Ethernet header and without the outer VLAN tag (which
 * the kernel moves into skb metadata before TC sees the packet). */
struct xf_rule_stats {
	__u64 packets; /* handled in XDP (keepalive packets are not) */
	__u64 bytes;
	__u64 last_used_ns;   /* CLOCK_MONOTONIC, coarse */
	__u64 kernel_last_ns; /* last keepalive packet sent on to the kernel */
};

/*
 * The flow cache in front of the subtable search: per CPU, 2^bits sets
 * (xf_cache_set_bits, chosen at enable time) of 128 bytes (two cache
 * lines), indexed by a hash of the packet's
 * cache key (see xf_subtable_list). A narrow cache key fills one 64-byte
 * line per entry and a set holds two (two-way set-associative); a wide one
 * takes the whole set (direct-mapped). Only the local CPU reads or writes
 * its sets (XDP does not nest on a CPU), so no entry changes under a
 * reader.
 *
 * An entry is valid while its tag equals (live list generation << 32 |
 * cache_gen). User space bumps cache_gen in every change once the new
 * flows are in, before the change returns, so no run starting after the
 * bump uses an entry from before it (a run that read the old generation
 * tags what it fills with the old one). The list generation keeps an
 * entry made under one union mask from answering a key masked with
 * another while a change is under way. Zeroed memory (tag 0) never
 * matches: cache_gen starts at 1.
 *
 * flow is the answer: a rule's, or action_set XF_CACHE_NO_FLOW for a miss.
 */
struct xf_cache_way {
	__u64 words[XF_CACHE_WORDS];
	__u64 tag;
	struct xf_answer flow;
};

struct xf_cache_wide {
	__u64 words[XF_KEY_WORDS];
	__u64 tag;
	struct xf_answer flow;
	__u64 pad[3];
};

struct xf_cache_set {
	union {
		struct xf_cache_way way[XF_CACHE_WAYS];
		struct xf_cache_wide wide;
	};
};

/* Per-CPU program counters, indexed by enum xf_counter. RX and HIT are
 * not counted by the program but summed by user space (every packet ends
 * in exactly one of the others), which saves two increments per packet. */
enum xf_counter {
	XF_CNT_RX = 0,	 /* packets seen: HIT + MISS + UNPARSED */
	XF_CNT_HIT,	 /* matched a flow: DROP + PASS + TX + REDIRECT +
			  * ACTION_ERROR + KEEPALIVE */
	XF_CNT_MISS,	 /* parsed, matched nothing: XDP_PASS */
	XF_CNT_UNPARSED, /* not understood by the parser: XDP_PASS */
	XF_CNT_DROP,
	XF_CNT_PASS, /* matched, action pass */
	XF_CNT_TX,
	XF_CNT_REDIRECT,
	XF_CNT_ACTION_ERROR,	 /* an action failed: packet dropped */
	XF_CNT_SUBTABLE_LOOKUPS, /* hash lookups done */
	XF_CNT_CACHE_HIT,	 /* answered by the exact-match cache */
	XF_CNT_KEEPALIVE,	 /* matched, sent on to the kernel (keepalive_ms) */
	XF_CNT_MAX,
};

/* All of them in one per-CPU value: one map lookup per packet. The value
 * also caches this CPU's clock (see clock_now in lib/stats.h). */
struct xf_counters {
	__u64 n[XF_CNT_MAX];
	__u64 clock_jiffies; /* jiffies when clock_ns was read */
	__u64 clock_ns;	     /* CLOCK_MONOTONIC coarse, then */
};

/*
 * User-space-only state, pinned beside the datapath maps so that any process
 * can rebuild the engine's view from bpffs alone. The program never reads
 * these.
 */

/* One installed rule, keyed by its rule_stats slot (the rule id). */
struct xf_rule_spec {
	__u64 seq;	  /* insertion order; a replaced rule keeps its place */
	__u64 group_seq;  /* creation order of its match mask in its priority */
	__u32 action_set; /* action_sets slot it uses */
	__u32 source;	  /* where the rule came from (Go: rule.Source) */
	__u32 text_len;
	__u32 pad;
	__u8 text[XF_RULE_TEXT_MAX]; /* canonical tc-flower text */
};

/* meta.dirty: what a process opening the table must do first. */
enum xf_dirty {
	XF_DIRTY_WRITING = 0x1, /* a writer died mid-change: repair */
	XF_DIRTY_GRACE = 0x2,	/* slots were freed without waiting for an
				 * RCU grace period: wait one before reusing
				 * any slot */
};

struct xf_meta {
	__u32 magic;
	__u32 active_list;   /* live subtable_lists slot: 0..XF_LIST_BUFFERS-1 */
	enum xf_dirty dirty; /* bits; 4 bytes like __u32 */
	__u32 max_subtables;
	__u64 next_seq;
	__u32 ifindex;	    /* device the program was attached to */
	__u32 attach_flags; /* XDP_FLAGS_* it was attached with */
};

#endif /* XDPFLOW_H */
