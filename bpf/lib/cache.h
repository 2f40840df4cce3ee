/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The per-CPU flow cache in front of the search (struct xf_cache_set in
 * xdpflow.h says what an entry holds and when it is valid).
 */
#ifndef XDPFLOW_LIB_CACHE_H
#define XDPFLOW_LIB_CACHE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xdpflow.h"
#include "maps.h"
#include "search.h"
#include "stats.h"

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

/* The answer of a search, for the cache. */
static __always_inline void cache_answer(struct xf_answer *dst, int found,
					 const struct xf_answer *out)
{
	dst->action_set = found ? out->action_set : XF_CACHE_NO_FLOW;
	dst->stats = found ? out->stats : 0;
}

/* lookup answers from the cache, or searches and fills it. Returns 1 with
 * *out set for a flow, 0 for a miss. padded is key as 16 words. */
static __always_inline int lookup(struct xf_key *key, const __u64 *padded, struct xf_answer *out,
				  struct xf_counters *cnt)
{
	struct xf_subtable_list *list, *searched;
	struct xf_cache_set *set;
	struct xf_answer *hit;
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

#endif /* XDPFLOW_LIB_CACHE_H */
