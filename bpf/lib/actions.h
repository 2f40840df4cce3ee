/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The actions of a hit's action set, run on the frame in place.
 */
#ifndef XDPFLOW_LIB_ACTIONS_H
#define XDPFLOW_LIB_ACTIONS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdpflow.h"
#include "maps.h"
#include "proto.h"
#include "stats.h"

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

#endif /* XDPFLOW_LIB_ACTIONS_H */
