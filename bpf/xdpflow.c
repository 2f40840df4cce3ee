//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdpflow: one prebuilt XDP program that runs TC-flower-like rules.
 *
 *   parse the packet into struct xf_key
 *   search the subtables in order: key & mask -> flows hash map, first hit wins
 *   run the hit's action set, count it
 *
 * Anything the parser does not understand, and every miss, is XDP_PASS: the
 * kernel (TC, nftables, the stack) stays the exact fallback.
 *
 * The key is built the way the kernel's flow dissector builds flower's key,
 * so that a rule means the same here as in cls_flower (see docs/ARCHITECTURE.md
 * for the deliberate differences).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdpflow.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_8021Q_BE bpf_htons(0x8100)
#define ETH_P_8021AD_BE bpf_htons(0x88A8)
#define ETH_P_IP_BE bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)
#define ETH_P_ARP_BE bpf_htons(0x0806)
#define ETH_P_RARP_BE bpf_htons(0x8035)

#define IPPROTO_ICMPV6_ 58
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define NEXTHDR_AUTH 51

/* The subtable list the program searches: a ring of buffers, and
 * meta.active_list says which one is live. User space fills the next buffer
 * and points active_list at it (values below 256: only the low byte
 * changes, so no reader sees a torn value); a run reads active_list once
 * and keeps its buffer to the end. User space writes a buffer again only
 * after an RCU grace period has passed since it stopped being live, so no
 * run ever reads a buffer being written, and with several buffers a change
 * rarely waits for one. (A map-in-map swap waits for that grace period
 * inside every swap, 10-20 ms, before the change after it can go live.) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XF_LIST_BUFFERS);
	__type(key, __u32);
	__type(value, struct xf_subtable_list);
} subtable_lists SEC(".maps");

/* Every flow of every subtable. BPF_F_NO_PREALLOC: an element replaced or
 * deleted is freed after an RCU grace period, so a packet that found it
 * keeps reading a whole, unchanged value. (Preallocated hash maps recycle
 * elements at once.) max_entries is set by user space at enable time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct xf_flow_key);
	__type(value, struct xf_flow);
} flows SEC(".maps");

/* Flows of narrow subtables (see struct xf_subtable); otherwise as flows. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct xf_narrow_flow_key);
	__type(value, struct xf_flow);
} flows_narrow SEC(".maps");

/* Action sets, shared by content between rules. Never rewritten while a flow
 * points at them: a changed rule gets a fresh slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct xf_action_set);
} action_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct xf_rule_stats);
} rule_stats SEC(".maps");

/* One entry: every counter, per CPU, found with one lookup per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xf_counters);
} counters SEC(".maps");

/* The flow cache (see xdpflow.h) and its generation. CPU c owns sets
 * c << xf_cache_set_bits .. +2^xf_cache_set_bits-1; user space sizes the
 * map for every possible CPU. A plain array indexed by CPU rather than a
 * PERCPU_ARRAY, because only an mmapable array's values are page-aligned:
 * each 128-byte set is then exactly two cache lines and a narrow entry
 * one (per-CPU values are only 8-byte aligned and would straddle). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1 << XF_CACHE_SET_BITS);
	__type(key, __u32);
	__type(value, struct xf_cache_set);
} flow_cache SEC(".maps");

/* log2 of the cache's sets per CPU. Set at load time, within
 * XF_CACHE_SET_BITS_MIN..MAX (user space checks), so shifts by it and by
 * 64 minus it are defined. A read-only constant: the verifier knows it. */
volatile const __u32 xf_cache_set_bits = XF_CACHE_SET_BITS;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cache_gen SEC(".maps");

/* The kernel may carry a frame's VLAN tag outside it, in the skb's
 * metadata (a veth whose peer has TX VLAN offload on, a NIC stripping
 * tags): TC and nft see the tag, this program would see an untagged
 * frame. Where the driver says (the RX VLAN metadata kfunc, veth since
 * 6.8), such a frame is left to the kernel. The kfunc is allowed in
 * device-bound programs only, and the verifier checks every call, even an
 * unreachable one: the loader sets xf_vlan_meta and loads device-bound,
 * or replaces the call (loader/vlanmeta.go). */
extern int bpf_xdp_metadata_rx_vlan_tag(const struct xdp_md *ctx, __be16 *vlan_proto,
					__u16 *vlan_tci) __ksym __weak;
volatile const __u32 xf_vlan_meta = 0;

/* Redirect targets, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

/* User-space-only state (see xdpflow.h); pinned with the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct xf_rule_spec);
} rule_specs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xf_meta);
} meta SEC(".maps");

/* Only so that these enums reach BTF and bpf2go generates their Go
 * constants; never read. */
const enum xf_action_op *xf_btf_action_op __attribute__((unused));
const enum xf_limits *xf_btf_limits __attribute__((unused));
const enum xf_frag *xf_btf_frag __attribute__((unused));
const enum xf_vlan_flags *xf_btf_vlan_flags __attribute__((unused));
const enum xf_counter *xf_btf_counter __attribute__((unused));

/* The run's counters: looked up once, then passed down. The lookup cannot
 * fail (a one-entry array), but a NULL is tolerated rather than assumed
 * away, so the verifier needs no trick. */
static __always_inline void count(struct xf_counters *c, __u32 which)
{
	if (c && which < XF_CNT_MAX)
		c->n[which]++;
}

static __always_inline void count_n(struct xf_counters *c, __u32 which, __u64 n)
{
	if (c && which < XF_CNT_MAX)
		c->n[which] += n;
}

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

struct iphdr_ {
	__u8 ihl_version; /* ihl in the low nibble on little-endian bitfields; read by hand */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ipv6hdr_ {
	__be32 vtc_flow; /* version 4, traffic class 8, flow label 20 */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct arphdr_eth_ipv4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 sip[4];
	__u8 tha[6];
	__u8 tip[4];
};

/*
 * Whole-word loads from the packet. To the compiler the headers' byte
 * arrays (MACs, addresses) are byte-aligned, so a memcpy from one becomes
 * a load, shift and OR per byte: that was a third of the time the program
 * spends on a cached packet. These casts tell the compiler "aligned", so
 * each compiles to one load; the packet itself is only 2-byte aligned from
 * the IP header on. The verifier accepts unaligned packet loads unless it
 * enforces strict alignment, which it does only on architectures without
 * efficient unaligned access (not x86-64 or arm64) or when the loader asks
 * (xdpflow does not). Stores go to the key on the stack, where the
 * verifier wants natural alignment: every one below is at an offset that
 * is a multiple of its size.
 */
/* The layout those stores rely on. */
_Static_assert(__builtin_offsetof(struct xf_key, eth_dst) == 4 &&
		       __builtin_offsetof(struct xf_key, eth_src) == 10,
	       "MACs at key offsets 4..15");
_Static_assert(__builtin_offsetof(struct xf_key, src_ip) % 8 == 0 &&
		       __builtin_offsetof(struct xf_key, dst_ip) % 8 == 0,
	       "addresses 8-byte aligned in the key");
_Static_assert(__builtin_offsetof(struct xf_key, src_port) % 4 == 0 &&
		       __builtin_offsetof(struct xf_key, dst_port) ==
			       __builtin_offsetof(struct xf_key, src_port) + 2,
	       "ports one aligned 32-bit word");

static __always_inline __u32 pkt32(const void *p)
{
	return *(const __u32 *)p;
}

static __always_inline __u64 pkt64(const void *p)
{
	return *(const __u64 *)p;
}

/* Both ports (or ICMP type and code and what follows), which the packet
 * and the key hold in the same order. */
static __always_inline void put_ports(struct xf_key *key, const void *l4)
{
	*(__u32 *)&key->src_port = pkt32(l4);
}

#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1FFF

enum parse_result {
	PARSE_OK = 0,
	PARSE_UNSUPPORTED = -1, /* malformed or truncated: leave it to the kernel */
};

/* Fills key->src_port.. for TCP/UDP/SCTP and ICMP from the L4 header at l4.
 * A truncated L4 header is unsupported (the dissector would stop short and
 * flower would match zeros; we do not guess). */
static __always_inline int parse_l4(void *l4, void *data_end, struct xf_key *key, int icmp_proto)
{
	switch (key->ip_proto) {
	case IPPROTO_TCP: {
		__u8 *th = l4;

		if ((void *)(th + 20) > data_end)
			return PARSE_UNSUPPORTED;
		/* A data offset below 5 words: the dissector keys no flags
		 * (__skb_flow_dissect_tcp), nft reads the raw byte. */
		if ((th[12] >> 4) < 5)
			return PARSE_UNSUPPORTED;
		put_ports(key, th);
		/* flag word: data offset (4) reserved (3) flags (9); flower
		 * keeps the low 12 bits */
		key->tcp_flags = bpf_htons(((__u16)th[12] << 8 | th[13]) & 0x0FFF);
		return PARSE_OK;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__u8 *uh = l4;

		if ((void *)(uh + 4) > data_end)
			return PARSE_UNSUPPORTED;
		put_ports(key, uh);
		return PARSE_OK;
	}
	default:
		if (key->ip_proto == icmp_proto) {
			__u8 *ih = l4;

			/* The dissector keys type and code only from a whole
			 * struct icmphdr (skb_flow_get_icmp_tci); nft reads
			 * single bytes. Below 8 bytes the two disagree. */
			if ((void *)(ih + 8) > data_end)
				return PARSE_UNSUPPORTED;
			key->icmp_type = ih[0];
			key->icmp_code = ih[1];
		}
		return PARSE_OK;
	}
}

static __always_inline int parse_ipv4(void *l3, void *data_end, struct xf_key *key)
{
	struct iphdr_ *iph = l3;
	__u32 ihl, tot_len;
	__u16 frag;

	if ((void *)(iph + 1) > data_end)
		return PARSE_UNSUPPORTED;
	if ((iph->ihl_version >> 4) != 4)
		return PARSE_UNSUPPORTED;
	ihl = (iph->ihl_version & 0x0F) * 4;
	if (ihl < sizeof(*iph))
		return PARSE_UNSUPPORTED;
	/* nft's netdev validation (__nft_set_pktinfo_ipv4_validate) gives a
	 * packet whose total length exceeds the frame, or is shorter than its
	 * header, no transport header at all; the dissector ignores the
	 * length. Such a frame means different things to the two sources. */
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < ihl || tot_len > (__u64)(data_end - l3))
		return PARSE_UNSUPPORTED;

	*(__u32 *)key->src_ip = pkt32(iph->saddr);
	*(__u32 *)key->dst_ip = pkt32(iph->daddr);
	key->ip_proto = iph->protocol;
	key->ip_tos = iph->tos;
	key->ip_ttl = iph->ttl;

	frag = bpf_ntohs(iph->frag_off);
	if (frag & (IP_MF_ | IP_OFFSET_)) {
		/* The dissector, as flower calls it, parses no L4 header of any
		 * fragment, not even the first: ports stay zero. */
		key->ip_frag = XF_FRAG_IS_FRAGMENT;
		if (!(frag & IP_OFFSET_))
			key->ip_frag |= XF_FRAG_FIRST;
		return PARSE_OK;
	}
	return parse_l4(l3 + ihl, data_end, key, IPPROTO_ICMP);
}

static __always_inline int parse_ipv6(void *l3, void *data_end, struct xf_key *key)
{
	struct ipv6hdr_ *ip6 = l3;
	void *cursor;
	__u8 nexthdr;
	__u32 vtc;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return PARSE_UNSUPPORTED;
	vtc = bpf_ntohl(ip6->vtc_flow);
	if ((vtc >> 28) != 6)
		return PARSE_UNSUPPORTED;
	/* As for IPv4: nft_set_pktinfo_ipv6_validate gives a payload longer
	 * than the frame no transport header. */
	if ((__u64)bpf_ntohs(ip6->payload_len) + sizeof(*ip6) > (__u64)(data_end - l3))
		return PARSE_UNSUPPORTED;

	*(__u64 *)key->src_ip = pkt64(ip6->saddr);
	*(__u64 *)(key->src_ip + 8) = pkt64(ip6->saddr + 8);
	*(__u64 *)key->dst_ip = pkt64(ip6->daddr);
	*(__u64 *)(key->dst_ip + 8) = pkt64(ip6->daddr + 8);
	key->ip_tos = (vtc >> 20) & 0xFF;
	key->ip_ttl = ip6->hop_limit;
	nexthdr = ip6->nexthdr;
	cursor = ip6 + 1;

	/* Skip hop-by-hop, routing and destination options headers, as the
	 * dissector does. Bounded: a chain longer than this is left to the
	 * kernel. */
	for (i = 0; i < XF_MAX_IPV6_EXT_HDRS; i++) {
		__u8 *opt = cursor;

		switch (nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			if ((void *)(opt + 2) > data_end)
				return PARSE_UNSUPPORTED;
			nexthdr = opt[0];
			cursor += ((__u32)opt[1] + 1) * 8;
			continue;
		case NEXTHDR_AUTH:
			/* nft's l4proto (ipv6_find_hdr) skips AH, the flow
			 * dissector does not: keys would disagree, so the
			 * kernel decides. */
			return PARSE_UNSUPPORTED;
		case NEXTHDR_FRAGMENT: {
			__u16 off;

			if ((void *)(opt + 8) > data_end)
				return PARSE_UNSUPPORTED;
			/* An extension header after the fragment header: the
			 * dissector keys it as the protocol, nft's
			 * ipv6_find_hdr walks past it (first fragment) or
			 * finds no protocol (later ones). */
			switch (opt[0]) {
			case NEXTHDR_HOP:
			case NEXTHDR_ROUTING:
			case NEXTHDR_FRAGMENT:
			case NEXTHDR_AUTH:
			case NEXTHDR_DEST:
				return PARSE_UNSUPPORTED;
			}
			key->ip_proto = opt[0];
			off = ((__u16)opt[2] << 8 | opt[3]) & 0xFFF8;
			key->ip_frag = XF_FRAG_IS_FRAGMENT;
			if (!off)
				key->ip_frag |= XF_FRAG_FIRST;
			/* no L4 keys for fragments (see parse_ipv4) */
			return PARSE_OK;
		}
		default:
			key->ip_proto = nexthdr;
			return parse_l4(cursor, data_end, key, IPPROTO_ICMPV6_);
		}
	}
	return PARSE_UNSUPPORTED;
}

static __always_inline int parse_arp(void *l3, void *data_end, struct xf_key *key)
{
	struct arphdr_eth_ipv4 *arp = l3;

	if ((void *)(arp + 1) > data_end)
		return PARSE_UNSUPPORTED;
	/* The dissector keys only Ethernet/IPv4 requests and replies
	 * (__skb_flow_dissect_arp); for anything else it leaves every ARP key
	 * zero, while nft reads the bytes. */
	if (arp->hrd != bpf_htons(1) || arp->pro != ETH_P_IP_BE || arp->hln != 6 || arp->pln != 4 ||
	    (arp->op != bpf_htons(1) && arp->op != bpf_htons(2)))
		return PARSE_UNSUPPORTED;
	key->ip_proto = bpf_ntohs(arp->op) & 0xFF;
	__builtin_memcpy(key->src_ip, arp->sip, 4);
	__builtin_memcpy(key->dst_ip, arp->tip, 4);
	__builtin_memcpy(key->arp_sha, arp->sha, 6);
	__builtin_memcpy(key->arp_tha, arp->tha, 6);
	return PARSE_OK;
}

static __always_inline int parse(struct xdp_md *ctx, struct xf_key *key, __u32 *l2_len)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	void *cursor;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return PARSE_UNSUPPORTED;

	key->ifindex = ctx->ingress_ifindex;
	/* The 12 bytes of MACs: key offsets 4..15, packet offsets 0..11. */
	*(__u32 *)key->eth_dst = pkt32(eth->h_dest);
	*(__u64 *)(key->eth_dst + 4) = pkt64(eth->h_dest + 4);
	proto = eth->h_proto;
	key->eth_type[0] = proto;
	cursor = eth + 1;
	*l2_len = sizeof(*eth);

	for (i = 0; i < XF_MAX_VLAN_TAGS; i++) {
		struct vlan_hdr_ *vh = cursor;

		if (proto != ETH_P_8021Q_BE && proto != ETH_P_8021AD_BE)
			break;
		if ((void *)(vh + 1) > data_end)
			return PARSE_UNSUPPORTED;
		/* The kernel takes the outer tag off before any hook runs
		 * (skb_vlan_untag) and drops the frame when 2 bytes do not
		 * follow the tag. */
		if (i == 0 && (void *)(vh + 1) + 2 > data_end)
			return PARSE_UNSUPPORTED;
		key->vlan_tci[i] = vh->tci;
		proto = vh->proto;
		key->eth_type[i + 1] = proto;
		cursor = vh + 1;
		/* the outer tag goes to skb metadata before TC counts bytes */
		if (i == 0)
			*l2_len += sizeof(*vh);
	}
	/* A third tag: the dissector would skip it, we leave it to the kernel. */
	if (proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE)
		return PARSE_UNSUPPORTED;
	/* An 802.3 length where an ethertype goes: the kernel makes the
	 * protocol ETH_P_802_3 or ETH_P_802_2 from the bytes that follow
	 * (eth_type_trans, vlan_set_encap_proto), which tc's "protocol" and
	 * nft's "meta protocol" match, while "ether type" reads the raw field.
	 * One key cannot say both. (Every type before proto is a TPID.) */
	if (bpf_ntohs(proto) < 0x0600)
		return PARSE_UNSUPPORTED;

	if (proto == ETH_P_IP_BE)
		return parse_ipv4(cursor, data_end, key);
	if (proto == ETH_P_IPV6_BE)
		return parse_ipv6(cursor, data_end, key);
	/* The dissector reads RARP as ARP. */
	if (proto == ETH_P_ARP_BE || proto == ETH_P_RARP_BE)
		return parse_arp(cursor, data_end, key);
	/* Other ethertypes: L2 keys only. */
	return PARSE_OK;
}

/* The live subtable list. */
static __always_inline struct xf_subtable_list *live_list(void)
{
	struct xf_meta *m;
	__u32 zero = 0, active;

	m = bpf_map_lookup_elem(&meta, &zero);
	if (!m)
		return NULL;
	active = *(volatile __u32 *)&m->active_list & (XF_LIST_BUFFERS - 1);
	return bpf_map_lookup_elem(&subtable_lists, &active);
}

/*
 * Search the subtables in order; the first one holding the masked key wins:
 * 1 with *out set, or 0.
 *
 * A global function, so that the verifier checks it once, on its own,
 * rather than once for each of the four places that call it (a 256-step
 * loop with a map lookup in each step, explored at every call site, makes
 * the program too large for the verifier of Debian's 6.1 kernel). Its
 * pointers are therefore checked for NULL, and it returns a copy of the
 * flow rather than a pointer to the map value.
 */
__attribute__((noinline)) int search(struct xf_subtable_list *list, struct xf_key *key,
				     struct xf_counters *cnt, struct xf_flow *out)
{
	struct xf_narrow_flow_key nk;
	struct xf_flow_key fk;
	__u32 n, i;

	if (!list || !key || !out)
		return 0;
	n = list->count;
	/* Both keys whole from the start: the two kinds of subtable then
	 * leave the stack in states the verifier can prune. */
	__builtin_memset(&fk, 0, sizeof(fk));
	__builtin_memset(&nk, 0, sizeof(nk));

	/* Bounded loop: the verifier walks at most XF_MAX_SUBTABLES
	 * iterations; user space never sets count higher. */
	for (i = 0; i < XF_MAX_SUBTABLES; i++) {
		struct xf_subtable *st;
		struct xf_flow *flow;
		__u64 *k = (__u64 *)key, *m, *o = (__u64 *)&fk.key;
		int w;

		if (i >= n)
			break;
		st = &list->subtables[i];
		m = (__u64 *)&st->mask;
		if (st->narrow_words) {
#pragma unroll
			for (w = 0; w < XF_NARROW_WORDS; w++) {
				/* User space points unused slots at a word the
				 * mask has zero, so no branch decides what goes
				 * in (branches here multiply the verifier's
				 * states). Indices are always below
				 * XF_KEY_WORDS; the clamp only shows the
				 * verifier that k[idx] and m[idx] are inside
				 * the key. */
				__u32 idx = st->word_idx[w];

				if (idx >= XF_KEY_WORDS)
					idx = 0;
				nk.words[w] = k[idx] & m[idx];
			}
			nk.subtable = st->id;
			flow = bpf_map_lookup_elem(&flows_narrow, &nk);
		} else {
#pragma unroll
			for (w = 0; w < XF_KEY_WORDS; w++)
				o[w] = k[w] & m[w];
			fk.subtable = st->id;
			flow = bpf_map_lookup_elem(&flows, &fk);
		}
		if (flow) {
			count_n(cnt, XF_CNT_SUBTABLE_LOOKUPS, i + 1);
			*out = *flow;
			return 1;
		}
	}
	count_n(cnt, XF_CNT_SUBTABLE_LOOKUPS, i);
	return 0;
}

/* Mixes a sum of products into the set index. The words are folded into
 * lanes that are multiplied in parallel: a chain of one multiply per word
 * (the obvious hash) costs more than the rest of a cache hit. Only the set
 * comes from it; a collision costs a search, never a wrong answer (the
 * whole cache key is compared). */
static __always_inline __u32 cache_set_of(__u64 h)
{
	h ^= h >> 31;
	h *= 0x94D049BB133111EBULL;
	return (__u32)(h >> (64 - xf_cache_set_bits));
}

static __always_inline __u32 hash_narrow(const __u64 *w)
{
	return cache_set_of(w[0] * 0x9E3779B97F4A7C15ULL + w[1] * 0xC2B2AE3D27D4EB4FULL +
			    w[2] * 0x165667B19E3779F9ULL + w[3] * 0xD6E8FEB86659FD93ULL +
			    w[4] * 0xFF51AFD7ED558CCDULL + w[5] * 0xC4CEB9FE1A85EC53ULL);
}

static __always_inline __u32 hash_wide(const __u64 *k)
{
	__u64 lane[4] = {};
	int w;

#pragma unroll
	for (w = 0; w < XF_KEY_WORDS; w++)
		lane[w & 3] ^= k[w];
	return cache_set_of(lane[0] * 0x9E3779B97F4A7C15ULL + lane[1] * 0xC2B2AE3D27D4EB4FULL +
			    lane[2] * 0x165667B19E3779F9ULL + lane[3] * 0xD6E8FEB86659FD93ULL);
}

/* Nonzero unless way holds cache key ck under tag. Written out: clang
 * leaves a loop here rolled, and a rolled loop costs three times the
 * instructions. */
static __always_inline __u64 way_differs(const struct xf_cache_way *way, const __u64 *ck, __u64 tag)
{
	_Static_assert(XF_CACHE_WORDS == 6, "way_differs compares 6 words");
	return (way->tag ^ tag) | (way->words[0] ^ ck[0]) | (way->words[1] ^ ck[1]) |
	       (way->words[2] ^ ck[2]) | (way->words[3] ^ ck[3]) | (way->words[4] ^ ck[4]) |
	       (way->words[5] ^ ck[5]);
}

static __always_inline __u64 wide_differs(const struct xf_cache_wide *e, const __u64 *ck, __u64 tag)
{
	__u64 diff = e->tag ^ tag;
	int w;

#pragma unroll
	for (w = 0; w < XF_KEY_WORDS; w++)
		diff |= e->words[w] ^ ck[w];
	return diff;
}

/* Set at load time only (a read-only constant the verifier folds away):
 * benchmarks load a copy without the cache to measure the search alone. */
volatile const __u32 xf_cache_disabled = 0;

/*
 * search_live searches list, and on a miss searches again if another list
 * went live meanwhile. A change that adds subtables publishes them before
 * it puts their flows and deletes the flows they replace; a run that read
 * the list from before the publish cannot see the new subtables, and may
 * look for the replaced flows after they are gone. Having seen that
 * deletion it also sees the publish that preceded it (x86 orders loads
 * with loads; the helper call keeps the compiler from moving the read),
 * and the newer list holds the new flows. *searched says which list gave
 * the answer; 1 with *out set for a flow, 0 for a miss.
 */
static __always_inline int search_live(struct xf_subtable_list *list, struct xf_key *key,
				       struct xf_counters *cnt, struct xf_flow *out,
				       struct xf_subtable_list **searched)
{
	struct xf_subtable_list *now;

	*searched = list;
	if (search(list, key, cnt, out))
		return 1;
	now = live_list();
	if (!now || now == list)
		return 0;
	/* A buffer is rewritten only a grace period after it stopped being
	 * live, so the same pointer is the same list. */
	*searched = now;
	return search(now, key, cnt, out);
}

/* The answer of a search, for the cache. */
static __always_inline void cache_answer(struct xf_flow *dst, int found, const struct xf_flow *out)
{
	dst->action_set = found ? out->action_set : XF_CACHE_NO_FLOW;
	dst->stats = found ? out->stats : 0;
}

/* lookup answers from the cache, or searches and fills it. Returns 1 with
 * *out set for a flow, 0 for a miss. padded is key as 16 words. */
static __always_inline int lookup(struct xf_key *key, const __u64 *padded, struct xf_flow *out,
				  struct xf_counters *cnt)
{
	struct xf_subtable_list *list, *searched;
	struct xf_cache_set *set;
	struct xf_flow *hit;
	__u64 ck[XF_KEY_WORDS]; /* the cache key: 6 words or 11 */
	__u64 *k = (__u64 *)key, tag;
	__u32 zero = 0, idx, gen;
	__u32 *genp;
	int found, w;

	/* Read the generation before the list and the search: an entry
	 * filled from a search that raced with a change carries the older
	 * generation. */
	genp = bpf_map_lookup_elem(&cache_gen, &zero);
	if (!genp)
		return 0; /* cannot happen: an array map */
	gen = *(volatile __u32 *)genp;
	list = live_list();
	if (!list)
		return 0; /* cannot happen: array maps */
	if (xf_cache_disabled)
		goto uncached;
	tag = (__u64)list->generation << 32 | gen;

	if (list->cache_words) {
		struct xf_cache_way *way0, *way1, *victim;

		/* padded holds the key in a 16-word buffer (zero past
		 * the key), so that any 4-bit index is inside it and the
		 * gather needs no bounds check. */
#pragma unroll
		for (w = 0; w < XF_CACHE_WORDS; w++)
			ck[w] = padded[list->cache_word_idx[w] & 15] & list->cache_mask[w];
		idx = (bpf_get_smp_processor_id() << xf_cache_set_bits) + hash_narrow(ck);
		set = bpf_map_lookup_elem(&flow_cache, &idx);
		if (!set)
			goto uncached; /* a CPU beyond the map: cannot happen */
		way0 = &set->way[0];
		way1 = &set->way[1];
		if (!way_differs(way0, ck, tag)) {
			hit = &way0->flow;
			goto hit;
		}
		if (!way_differs(way1, ck, tag)) {
			hit = &way1->flow;
			goto hit;
		}
		/* A miss fills a stale way; when both are current, the first
		 * moves to the second (whose entry is dropped) and the new one
		 * goes first: the two newest stay. */
		victim = way0;
		if (way0->tag == tag) {
			if (way1->tag != tag)
				victim = way1;
			else
				__builtin_memcpy(way1, way0, sizeof(*way1));
		}
		found = search_live(list, key, cnt, out, &searched);
		/* An answer from a newer list (rare: a change was under way)
		 * is not cached: the key is masked with this list's union. */
		if (searched == list) {
			__builtin_memcpy(victim->words, ck, sizeof(victim->words));
			victim->tag = tag;
			cache_answer(&victim->flow, found, out);
		}
		return found;
	}

	/* Wide: the whole key under the union mask, one entry per set. */
#pragma unroll
	for (w = 0; w < XF_KEY_WORDS; w++)
		ck[w] = k[w] & ((__u64 *)&list->union_mask)[w];
	idx = (bpf_get_smp_processor_id() << xf_cache_set_bits) + hash_wide(ck);
	set = bpf_map_lookup_elem(&flow_cache, &idx);
	if (!set)
		goto uncached;
	if (!wide_differs(&set->wide, ck, tag)) {
		hit = &set->wide.flow;
		goto hit;
	}
	found = search_live(list, key, cnt, out, &searched);
	if (searched == list) {
		__builtin_memcpy(set->wide.words, ck, sizeof(set->wide.words));
		set->wide.tag = tag;
		cache_answer(&set->wide.flow, found, out);
	}
	return found;

hit:
	count(cnt, XF_CNT_CACHE_HIT);
	*out = *hit;
	return out->action_set != XF_CACHE_NO_FLOW;

uncached:
	return search_live(list, key, cnt, out, &searched);
}

/* Insert a VLAN tag right after the MAC addresses. */
static __always_inline int vlan_push(struct xdp_md *ctx, __be16 tpid, __u16 tci)
{
	void *data, *data_end;
	__u8 macs[12];

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + 12 > data_end)
		return -1;
	__builtin_memcpy(macs, data, 12);
	if (bpf_xdp_adjust_head(ctx, -4))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + 16 > data_end)
		return -1;
	__builtin_memcpy(data, macs, 12);
	*(__be16 *)(data + 12) = tpid;
	*(__be16 *)(data + 14) = bpf_htons(tci);
	return 0;
}

/* Remove the outer VLAN tag; a no-op on an untagged frame, as act_vlan. */
static __always_inline int vlan_pop(struct xdp_md *ctx)
{
	void *data, *data_end;
	__u8 macs[12];
	__be16 tpid;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + 18 > data_end)
		return 0;
	tpid = *(__be16 *)(data + 12);
	if (tpid != ETH_P_8021Q_BE && tpid != ETH_P_8021AD_BE)
		return 0;
	__builtin_memcpy(macs, data, 12);
	if (bpf_xdp_adjust_head(ctx, 4))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + 12 > data_end)
		return -1;
	__builtin_memcpy(data, macs, 12);
	return 0;
}

/* Rewrite the outer tag's id (and priority if asked); a no-op when untagged. */
static __always_inline int vlan_modify(struct xdp_md *ctx, const struct xf_action *a)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__be16 *tpid;
	__u16 tci;

	if (data + 16 > data_end)
		return 0;
	tpid = data + 12;
	if (*tpid != ETH_P_8021Q_BE && *tpid != ETH_P_8021AD_BE)
		return 0;
	tci = bpf_ntohs(*(__be16 *)(data + 14));
	tci = (tci & ~0x0FFF) | (a->vlan_id & 0x0FFF);
	if (a->flags & XF_VLAN_SET_PRIO)
		tci = (tci & 0x1FFF) | ((__u16)(a->vlan_prio & 7) << 13);
	*tpid = a->vlan_proto;
	*(__be16 *)(data + 14) = bpf_htons(tci);
	return 0;
}

static __always_inline int set_mac(struct xdp_md *ctx, int offset, const __u8 *mac)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (data + 12 > data_end)
		return -1;
	__builtin_memcpy(data + offset, mac, 6);
	return 0;
}

/* Run an action set; returns the XDP verdict. */
static __always_inline int run_actions(struct xdp_md *ctx, const struct xf_action_set *set,
				       struct xf_counters *cnt)
{
	__u32 n = set->count;
	int i, modified = 0;

	for (i = 0; i < XF_MAX_ACTIONS; i++) {
		const struct xf_action *a = &set->actions[i];
		int err = 0;

		if (i >= n)
			break;
		switch (a->op) {
		case XF_ACT_DROP:
			count(cnt, XF_CNT_DROP);
			return XDP_DROP;
		case XF_ACT_PASS:
			count(cnt, XF_CNT_PASS);
			return XDP_PASS;
		case XF_ACT_TX:
			count(cnt, XF_CNT_TX);
			return XDP_TX;
		case XF_ACT_REDIRECT:
			count(cnt, XF_CNT_REDIRECT);
			/* On a missing devmap entry, drop: user space installs the
			 * entry before any flow that uses it. */
			return bpf_redirect_map(&tx_ports, a->ifindex, XDP_DROP);
		case XF_ACT_VLAN_PUSH:
			err = vlan_push(ctx, a->vlan_proto,
					(a->vlan_id & 0x0FFF) | ((__u16)(a->vlan_prio & 7) << 13));
			break;
		case XF_ACT_VLAN_POP:
			err = vlan_pop(ctx);
			break;
		case XF_ACT_VLAN_MODIFY:
			err = vlan_modify(ctx, a);
			break;
		case XF_ACT_SET_ETH_SRC:
			err = set_mac(ctx, 6, a->mac);
			break;
		case XF_ACT_SET_ETH_DST:
			err = set_mac(ctx, 0, a->mac);
			break;
		default:
			err = -1;
		}
		if (err) {
			count(cnt, XF_CNT_ACTION_ERROR);
			/* Untouched, the kernel can still apply the rule; once
			 * changed, the packet cannot be handed on half-done. */
			return modified ? XDP_DROP : XDP_PASS;
		}
		modified = 1;
	}
	/* No terminal action: on to TC and the stack, like "pipe". */
	count(cnt, XF_CNT_PASS);
	return XDP_PASS;
}

/*
 * CLOCK_MONOTONIC coarse, read through this CPU's cache: the coarse clock
 * moves only when the tick moves jiffies, so while jiffies is unchanged the
 * value read at its last change is the clock's (to within the moment
 * between the tick's jiffies update and its clock update: less than the
 * clock's own one-tick resolution). bpf_jiffies64 is inlined into a load;
 * the clock helper is a call, which cost about a tenth of a cached hit.
 */
static __always_inline __u64 clock_now(struct xf_counters *c)
{
	__u64 j = bpf_jiffies64();

	if (!c)
		return bpf_ktime_get_coarse_ns();
	if (c->clock_jiffies != j) {
		c->clock_ns = bpf_ktime_get_coarse_ns();
		c->clock_jiffies = j;
	}
	return c->clock_ns;
}

SEC("xdp")
int xdpflow(struct xdp_md *ctx)
{
	struct xf_counters *cnt;
	struct xf_action_set *set;
	struct xf_rule_stats *st;
	struct xf_flow flow;
	__u32 set_idx, stats_idx, zero = 0;
	/* The key, in a buffer of 16 words: see lookup. */
	union {
		struct xf_key key;
		__u64 words[16];
	} padded;
	struct xf_key *key = &padded.key;
	__u32 l2_len = 0;
	__u64 len, now;

	__builtin_memset(&padded, 0, sizeof(padded));
	cnt = bpf_map_lookup_elem(&counters, &zero);
	if (xf_vlan_meta) {
		__be16 vlan_proto;
		__u16 vlan_tci;

		if (bpf_xdp_metadata_rx_vlan_tag(ctx, &vlan_proto, &vlan_tci) == 0) {
			count(cnt, XF_CNT_UNPARSED);
			return XDP_PASS;
		}
	}
	if (parse(ctx, key, &l2_len) != PARSE_OK) {
		count(cnt, XF_CNT_UNPARSED);
		return XDP_PASS;
	}

	if (!lookup(key, padded.words, &flow, cnt)) {
		count(cnt, XF_CNT_MISS);
		return XDP_PASS;
	}
	set_idx = flow.action_set;
	stats_idx = flow.stats;

	set = bpf_map_lookup_elem(&action_sets, &set_idx);
	if (!set) {
		count(cnt, XF_CNT_ACTION_ERROR);
		return XDP_PASS;
	}
	st = bpf_map_lookup_elem(&rule_stats, &stats_idx);
	if (st) {
		now = clock_now(cnt);
		/* Per CPU, so no two CPUs race on kernel_last_ns; a rule
		 * then sends up to one packet per interval per CPU. The
		 * packet is handed on untouched and not counted here: TC
		 * counts it and acts on it exactly as this rule would. */
		if (set->keepalive_ms &&
		    now - st->kernel_last_ns >= (__u64)set->keepalive_ms * 1000000) {
			st->kernel_last_ns = now;
			count(cnt, XF_CNT_KEEPALIVE);
			return XDP_PASS;
		}
		len = (__u64)(ctx->data_end - ctx->data);
		st->packets++;
		st->bytes += len > l2_len ? len - l2_len : 0;
		st->last_used_ns = now;
	}
	return run_actions(ctx, set, cnt);
}
