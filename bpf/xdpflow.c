//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdpflow: one prebuilt XDP program that runs TC-flower-like rules.
 *
 *   parse the packet into struct xf_key
 *   search the subtables: key & mask -> flows hash map, the best-ranked hit wins
 *   run the hit's action set, count it
 *
 * Anything the parser does not understand, and every miss, is XDP_PASS: the
 * kernel (TC, nftables, the stack) stays the exact fallback.
 *
 * The key is built the way the kernel's flow dissector builds flower's key,
 * so that a rule means the same here as in cls_flower (see docs/ARCHITECTURE.md
 * for the deliberate differences).
 *
 * Each step is a header in lib/: parse.h, cache.h (the flow cache in front
 * of search.h's subtable search), actions.h; stats.h counts, maps.h holds
 * the maps and proto.h the wire formats. xdpflow.h has the layouts shared
 * with user space.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xdpflow.h"
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/parse.h"
#include "lib/search.h"
#include "lib/cache.h"
#include "lib/actions.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Only so that these enums reach BTF and bpf2go generates their Go
 * constants; never read. */
const enum xf_action_op *xf_btf_action_op __attribute__((unused));
const enum xf_limits *xf_btf_limits __attribute__((unused));
const enum xf_frag *xf_btf_frag __attribute__((unused));
const enum xf_vlan_flags *xf_btf_vlan_flags __attribute__((unused));
const enum xf_counter *xf_btf_counter __attribute__((unused));

SEC("xdp")
int xdpflow(struct xdp_md *ctx)
{
	struct xf_counters *cnt;
	struct xf_action_set *set;
	struct xf_rule_stats *st;
	struct xf_answer flow;
	__u32 set_idx, stats_idx, zero = 0;
	/* The key, in a buffer of 16 words: see lookup. */
	union {
		struct xf_key key;
		__u64 words[16];
	} padded;
	struct xf_key *key = &padded.key;
	__u32 l2_len = 0;

	__builtin_memset(&padded, 0, sizeof(padded));
	cnt = bpf_map_lookup_elem(&counters, &zero);
	/* A frame whose VLAN tag the driver holds outside it is the kernel's
	 * (xf_vlan_meta, lib/parse.h). */
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
	if (count_rule(ctx, st, set, cnt, l2_len))
		return XDP_PASS; /* the rule's keepalive packet */
	return run_actions(ctx, set, cnt);
}
