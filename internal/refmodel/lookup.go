package refmodel

import (
	"encoding/binary"

	"github.com/xdpflow/xdpflow/rule"
)

// classify returns the index in rules (in lookup order, see Table) of the
// rule the kernel runs for key k, or -1. Rules of one priority and mask
// are one group, next to each other: tcf_classify (net/sched/cls_api.c)
// tries the priorities in order, the filter's protocol being part of its
// key (EthType[0]); fl_classify (net/sched/cls_flower.c) tries each
// priority's masks in the order they were made, and the first mask with a
// filter for the key decides.
func classify(rules []*rule.Rule, k *rule.Key) int {
	for i := 0; i < len(rules); {
		j := i + 1
		for j < len(rules) && rules[j].Order() == rules[i].Order() && rules[j].MaskGroup() == rules[i].MaskGroup() {
			j++
		}
		if m := maskLookup(rules[i:j], k); m >= 0 {
			return i + m
		}
		i = j
	}
	return -1
}

// maskLookup is fl_mask_lookup over one mask's filters, in the order of
// the mask's filter list (insertion, a replaced filter keeping its place).
// Without port ranges the masked key finds the one filter with it (two
// cannot share one: fl_ht_insert_unique). nft rules of one level never
// overlap (nft.Compile), so any that matches is the one.
func maskLookup(group []*rule.Rule, k *rule.Key) int {
	if !group[0].RangesOrdered() {
		for i, r := range group {
			if Matches(r, k) {
				return i
			}
		}
		return -1
	}
	return rangeLookup(group, k)
}

// rangeLookup is fl_lookup_range: the filters are walked in list order,
// and the first whose ranges hold the packet's ports (fl_range_port_dst_cmp,
// fl_range_port_src_cmp) lends its ranges to a hash lookup of the masked
// key (__fl_lookup). That finds the filter with those ranges and the
// packet's other fields, which is not always the one walked: a filter
// with another key but the same ranges, inserted earlier, brings it
// forward of filters inserted before it.
func rangeLookup(group []*rule.Rule, k *rule.Key) int {
	for _, f := range group {
		if !inRanges(&f.Match, k) {
			continue
		}
		for i, g := range group {
			if g.Match.SrcPortRange == f.Match.SrcPortRange && g.Match.DstPortRange == f.Match.DstPortRange &&
				maskedEqual(&g.Match, k) {
				return i
			}
		}
	}
	return -1
}

// Matches reports whether rule r matches key k: one of its matches (the
// masked fields and the port ranges) holds.
func Matches(r *rule.Rule, k *rule.Key) bool {
	for _, m := range append([]rule.Match{r.Match}, r.More...) {
		if maskedEqual(&m, k) && inRanges(&m, k) {
			return true
		}
	}
	return false
}

func maskedEqual(m *rule.Match, k *rule.Key) bool {
	return rule.MaskKey(k, &m.Mask) == rule.MaskKey(&m.Key, &m.Mask)
}

// inRanges: a port within a range's bounds, both included; and an IPv4
// address within an nft rule's prefix where its match carries one beside
// the mask (nft's payload compare of the masked address, nft_cmp_eval).
func inRanges(m *rule.Match, k *rule.Key) bool {
	in := func(pr rule.PortRange, be uint16) bool {
		p := rule.BE16ToHost(be)
		return !pr.Set() || (p >= pr.Min && p <= pr.Max)
	}
	return in(m.SrcPortRange, k.SrcPort) && in(m.DstPortRange, k.DstPort) &&
		m.SrcAddrs.Contains(binary.BigEndian.Uint32(k.SrcIp[:4])) && m.DstAddrs.Contains(binary.BigEndian.Uint32(k.DstIp[:4]))
}
