/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The program's maps: user space creates, sizes, pins and fills them
 * (maps/, loader/); the program reads them and writes only its counters,
 * rule stats and flow cache. With them xf_cache_set_bits, the flow cache's
 * sets per CPU, a load-time constant.
 */
#ifndef XDPFLOW_LIB_MAPS_H
#define XDPFLOW_LIB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xdpflow.h"

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

/* Flows of narrow ranged subtables, with their ranges (struct
 * xf_ranged_flow); otherwise as flows_narrow. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct xf_narrow_flow_key);
	__type(value, struct xf_ranged_flow);
} flows_ranged SEC(".maps");

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

#endif /* XDPFLOW_LIB_MAPS_H */
