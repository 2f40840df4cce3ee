/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Counting: the run's per-CPU counters (enum xf_counter) and each rule's
 * packets, bytes and last use (struct xf_rule_stats), with the clock that
 * dates them.
 */
#ifndef XDPFLOW_LIB_STATS_H
#define XDPFLOW_LIB_STATS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xdpflow.h"

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

/* Counts a hit to its rule in st, its rule_stats entry (nothing when the
 * lookup found none), and returns 0; or, for the rule's keepalive packet
 * (xf_action_set.keepalive_ms), counts that and returns 1: the packet goes
 * on to the kernel. */
static __always_inline int count_rule(struct xdp_md *ctx, struct xf_rule_stats *st,
				      const struct xf_action_set *set, struct xf_counters *cnt,
				      __u32 l2_len)
{
	__u64 len, now;

	if (!st)
		return 0;
	now = clock_now(cnt);
	/* Per CPU, so no two CPUs race on kernel_last_ns; a rule then sends
	 * up to one packet per interval per CPU. The packet is handed on
	 * untouched and not counted here: TC counts it and acts on it exactly
	 * as this rule would. */
	if (set->keepalive_ms && now - st->kernel_last_ns >= (__u64)set->keepalive_ms * 1000000) {
		st->kernel_last_ns = now;
		count(cnt, XF_CNT_KEEPALIVE);
		return 1;
	}
	len = (__u64)(ctx->data_end - ctx->data);
	st->packets++;
	st->bytes += len > l2_len ? len - l2_len : 0;
	st->last_used_ns = now;
	return 0;
}

#endif /* XDPFLOW_LIB_STATS_H */
