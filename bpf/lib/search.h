/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Tuple-space search: the live subtable list, each subtable's mask over the
 * key, and the flows hash maps.
 */
#ifndef XDPFLOW_LIB_SEARCH_H
#define XDPFLOW_LIB_SEARCH_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdpflow.h"
#include "maps.h"
#include "stats.h"

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

/* Whether the ports are in the flow's ranges (always, for a flow without). */
static __always_inline int in_ranges(const struct xf_flow *flow, __u16 sport, __u16 dport)
{
	return sport >= flow->sport_lo && sport <= flow->sport_hi && dport >= flow->dport_lo &&
	       dport <= flow->dport_hi;
}

/* Whether the IPv4 addresses (host order) are in the flow's ranges. */
static __always_inline int in_addr_ranges(const struct xf_ranged_flow *rf, __u32 saddr, __u32 daddr)
{
	return saddr >= rf->saddr_lo && saddr <= rf->saddr_hi && daddr >= rf->daddr_lo &&
	       daddr <= rf->daddr_hi;
}

/* Nonzero if no flow of st matches a key of these addresses (host order):
 * outside the spans' ranges. Without branches: a branch for each compare
 * multiplies the states 6.1's verifier walks in the search loop past its
 * limit. An address below lo makes the 64-bit difference wrap, setting
 * bit 63. */
static __always_inline __u64 outside_spans(const struct xf_subtable *st, __u32 saddr, __u32 daddr)
{
	__u64 out = ((__u64)saddr - st->saddr_lo) | ((__u64)st->saddr_hi - saddr) |
		    ((__u64)daddr - st->daddr_lo) | ((__u64)st->daddr_hi - daddr);

	return out >> 63;
}

/* Nonzero unless the narrow key words o are the inline flow's. */
static __always_inline __u64 words_differ(const __u64 *o, const __u64 *w)
{
	_Static_assert(XF_NARROW_WORDS == 6, "words_differ compares 6 words");
	return (o[0] ^ w[0]) | (o[1] ^ w[1]) | (o[2] ^ w[2]) | (o[3] ^ w[3]) | (o[4] ^ w[4]) |
	       (o[5] ^ w[5]);
}

/*
 * Search the subtables in order of their bounds for the hit of the lowest
 * rank: 1 with *out set to its answer, or 0. The search stops at the first
 * subtable whose bound is not below the best rank found, since no flow of
 * it or of any subtable after it can beat that. It looks only in the
 * subtables the list's rows for the key's address bytes have, and
 * skips those whose address spans leave the key's addresses out.
 *
 * A global function, so that the verifier checks it once, on its own,
 * rather than once for each of the four places that call it (a 256-step
 * loop with a map lookup in each step, explored at every call site, makes
 * the program too large for the verifier of Debian's 6.1 kernel). Its
 * pointers are therefore checked for NULL, and it returns a copy of the
 * flow rather than a pointer to the map value.
 */
__attribute__((noinline)) int search(struct xf_subtable_list *list, struct xf_key *key,
				     struct xf_counters *cnt, struct xf_answer *out)
{
	/* One key for both maps: a narrow key is the first 56 bytes of a
	 * wide one (the subtable, then the words), which keeps the stack of
	 * this function and its caller within 512 bytes on 6.1. */
	struct xf_flow_key fk;
	__u32 saddr, daddr, i, lookups = 0;
	__u64 best, cand[XF_MAX_SUBTABLES / 64];
	int b, w;

	if (!list || !key || !out)
		return 0;
	best = list->no_rank;
	saddr = bpf_ntohl(*(__be32 *)key->src_ip);
	daddr = bpf_ntohl(*(__be32 *)key->dst_ip);
	_Static_assert(__builtin_offsetof(struct xf_narrow_flow_key, words) ==
			       __builtin_offsetof(struct xf_flow_key, key),
		       "a narrow key is a prefix of a wide one");
	/* The key whole from the start: the two kinds of subtable then leave
	 * the stack in states the verifier can prune. */
	__builtin_memset(&fk, 0, sizeof(fk));
	/* The candidates: the subtables the rows of all 8 address bytes have.
	 * A word at a time, the rows' offsets worked out again for each:
	 * clang otherwise keeps the 8 rows' pointers or words at once and
	 * spills them past the stack's 512 bytes (barrier_var makes it
	 * forget the list and the addresses). */
#pragma unroll
	for (w = 0; w < XF_MAX_SUBTABLES / 64; w++) {
		__u64 c = ~0ULL;

		/* Only the words that have subtables: most lists fill one. */
		if (w > 0 && w * 64 >= list->count) {
			cand[w] = 0;
			continue;
		}
		barrier_var(list);
		barrier_var(saddr);
		barrier_var(daddr);
#pragma unroll
		for (b = 0; b < XF_ADDR_BYTES; b++)
			c &= list->by_saddr_byte[w][b][(saddr >> (24 - 8 * b)) & 0xff] &
			     list->by_daddr_byte[w][b][(daddr >> (24 - 8 * b)) & 0xff];
		cand[w] = c;
	}

	/* Bounded loop: the verifier walks at most XF_MAX_SUBTABLES
	 * iterations; user space never sets count higher. i steps over
	 * the positions that are not candidates, a word or a byte of them
	 * at a time where it can, and stays a constant on each path the
	 * verifier walks (a position computed from the bits, as by counting
	 * trailing zeros, makes every entry's offset a range, and the states
	 * of the loop then no longer prune). */
	for (i = 0; i < XF_MAX_SUBTABLES; i++) {
		struct xf_subtable *st;
		struct xf_flow *flow;
		__u64 *k = (__u64 *)key, *m, *o = (__u64 *)&fk.key;
		__u64 rest = cand[i / 64] >> (i % 64);

		if (!rest) {
			i |= 63;
			continue;
		}
		if (!(rest & 0xff)) {
			i |= 7;
			continue;
		}
		if (!(rest & 1))
			continue;
		/* count and the ports are read where they are used: kept
		 * from before the loop, they made the verifier of 6.18 walk
		 * past its limit. */
		if (i >= list->count)
			break;
		st = &list->subtables[i];
		if (st->bound >= best)
			break;
		/* A few compares instead of a hash lookup that would miss. */
		if (outside_spans(st, saddr, daddr))
			continue;
		lookups++;
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
				o[w] = k[idx] & m[idx];
			}
			fk.subtable = st->id;
			/* The words are read back from fk rather than kept in
			 * registers, which the compare would spill: the stack
			 * of this function and its caller stays within 512
			 * bytes. */
			barrier();
			if (st->inlined) {
				const struct xf_ranged_flow *rf = &st->inline_flow;

				flow = !words_differ(o, st->inline_words) &&
						       in_addr_ranges(rf, saddr, daddr) ?
					       (struct xf_flow *)&rf->flow :
					       NULL;
			} else if (st->ranged) {
				struct xf_ranged_flow *rf = bpf_map_lookup_elem(&flows_ranged, &fk);

				flow = rf && in_addr_ranges(rf, saddr, daddr) ? &rf->flow : NULL;
			} else {
				flow = bpf_map_lookup_elem(&flows_narrow, &fk);
			}
		} else {
#pragma unroll
			for (w = 0; w < XF_KEY_WORDS; w++)
				o[w] = k[w] & m[w];
			fk.subtable = st->id;
			flow = bpf_map_lookup_elem(&flows, &fk);
		}
		/* The ports read here: see count above. */
		if (flow && flow->rank < best &&
		    in_ranges(flow, bpf_ntohs(key->src_port), bpf_ntohs(key->dst_port))) {
			best = flow->rank;
			out->action_set = flow->action_set;
			out->stats = flow->stats;
		}
	}
	count_n(cnt, XF_CNT_SUBTABLE_LOOKUPS, lookups);
	return best != list->no_rank;
}

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
				       struct xf_counters *cnt, struct xf_answer *out,
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

#endif /* XDPFLOW_LIB_SEARCH_H */
