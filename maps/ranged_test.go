package maps_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
)

// TestRangedEntries: nft rules whose port ranges stay ranges (one flow per
// range, in subtables of their own, the range checked in the program),
// among rules of exact and masked ports, give every packet the rule the
// model gives it: on install, after a reopen (the rules then known by
// their installed flows alone, ranges read back from the maps), and as
// rules go. A second ranged entry of a flow is refused, as nft.Compile
// never makes one.
func TestRangedEntries(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, true)
		rng := rand.New(rand.NewSource(1))
		dsts := []string{"198.18.0.1", "198.18.0.2", "198.18.1.7"}
		type installed struct {
			id   maps.RuleID
			prio uint32
		}
		var ids []installed
		refused := 0
		for level := 1; level <= 120; level++ {
			m := randomRangedMatch(rng, dsts)
			act := rule.ActDrop
			if level%3 == 0 {
				act = rule.ActPass
			}
			r := &rule.Rule{Source: rule.SourceNFT, Dev: ingressDev, Level: uint32(level), Protocol: rule.EthPAll,
				Match: m, Actions: []rule.Action{{Kind: act}}, Name: fmt.Sprintf("netdev/t/in/%d#0", level)}
			r.Digest = fmt.Sprint(level)
			r.Text = nft.FormatSpec(r)
			got, err := h.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: r}}})
			if errors.Is(err, maps.ErrExists) {
				refused++ // another rule's ranged flow: nft would use blocks
				continue
			}
			if err != nil {
				t.Fatalf("level %d: %v", level, err)
			}
			h.checkFlows()
			h.model.Add(r)
			ids = append(ids, installed{got[0], r.Level})
		}
		if refused == 0 || refused > 60 {
			t.Fatalf("%d of 120 rules refused for a ranged flow another holds: the test no longer exercises that, or little else", refused)
		}
		var frames [][]byte
		for i := 0; i < 600; i++ {
			frames = append(frames, rangedFrame(dsts[rng.Intn(len(dsts))], uint16(rng.Intn(4600)), uint16(rng.Intn(4600))))
		}
		frames = append(frames, frames...)
		h.check(frames)
		h.reopen()
		h.checkFlows()
		h.check(frames)
		for i, in := range ids {
			if i%2 == 0 {
				continue
			}
			if _, err := h.table.Apply(maps.Change{Delete: []maps.RuleID{in.id}}); err != nil {
				t.Fatal(err)
			}
			if !h.model.DeleteLevel(in.prio) {
				t.Fatalf("the model has no rule of level %d", in.prio)
			}
		}
		h.checkFlows()
		h.check(frames)
	})
}

// TestRangedCacheKey: with only ranged rules, no subtable's mask has the
// ports, but their answers depend on them: the flow cache keys them, so a
// packet out of the range is never answered as one in it was.
func TestRangedCacheKey(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, true)
		var m rule.Match
		m.Key.EthType[0], m.Mask.EthType[0] = rule.HostToBE16(rule.EthPIP), 0xffff
		m.Key.IpProto, m.Mask.IpProto = 17, 0xff
		m.DstPortRange = rule.PortRange{Min: 1000, Max: 2000}
		h.installNFT(1, m)
		var frames [][]byte
		for _, p := range []uint16{999, 1000, 1500, 2000, 2001, 80} {
			frames = append(frames, rangedFrame("198.18.0.1", 7, p))
		}
		defer testutil.OnOneCPU(t)() // the cache is per CPU
		hits := h.cacheHits()
		h.check(append(append(frames, frames...), frames...))
		if h.cacheHits()-hits < len(frames) {
			t.Fatalf("%d cache hits: the cache was not exercised", h.cacheHits()-hits)
		}
	})
}

// randomRangedMatch is a UDP match to one of dsts (/32 or /24) with the
// source port any, exact or a range, and the destination port exact or a
// range.
func randomRangedMatch(rng *rand.Rand, dsts []string) rule.Match {
	pick := func() rule.PortRange {
		lo := uint16(rng.Intn(3000))
		return rule.PortRange{Min: lo, Max: lo + uint16(1+rng.Intn(1500))}
	}
	var m rule.Match
	m.Key.EthType[0], m.Mask.EthType[0] = rule.HostToBE16(rule.EthPIP), 0xffff
	m.Key.IpProto, m.Mask.IpProto = 17, 0xff
	copy(m.Key.DstIp[:4], net.ParseIP(dsts[rng.Intn(len(dsts))]).To4())
	copy(m.Mask.DstIp[:4], []byte{255, 255, 255, 255 << uint(rng.Intn(2)*8)})
	switch rng.Intn(4) {
	case 0:
		m.Key.SrcPort, m.Mask.SrcPort = rule.HostToBE16(uint16(rng.Intn(3000))), 0xffff
	case 1:
		m.SrcPortRange = pick()
	}
	if rng.Intn(3) > 0 {
		m.DstPortRange = pick()
	} else {
		m.Key.DstPort, m.Mask.DstPort = rule.HostToBE16(uint16(rng.Intn(4500))), 0xffff
	}
	m.Key = rule.MaskKey(&m.Key, &m.Mask)
	return m
}

// rangedFrame is a UDP frame to dst with these ports.
func rangedFrame(dst string, sport, dport uint16) []byte {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	return testutil.Eth(mac, mac, nil, 0x0800, testutil.IPv4(net.IPv4(198, 18, 9, 9), net.ParseIP(dst), 17,
		testutil.IPv4Opts{}, testutil.UDP(sport, dport, make([]byte, 18))))
}

// TestAddressRangedEntries: nft rules whose IPv4 prefixes are longer than
// their subtable's mask keeps (the address checked in the program as a
// range, as nft's compile places rules of many prefix lengths in a few
// subtables), with port ranges or not, give every packet the rule the model
// gives it: on install, after a reopen (the prefixes read back from the
// maps' ranges), as rules go, and through the flow cache.
func TestAddressRangedEntries(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, true)
		rng := rand.New(rand.NewSource(2))
		var levels []uint32
		var ids []maps.RuleID
		refused := 0
		for level := uint32(1); level <= 160; level++ {
			r := &rule.Rule{Source: rule.SourceNFT, Dev: ingressDev, Level: level, Protocol: rule.EthPAll,
				Match: randomAddressRangedMatch(rng), Actions: []rule.Action{{Kind: []rule.ActionKind{rule.ActDrop, rule.ActPass}[level%2]}},
				Name: fmt.Sprintf("netdev/t/in/%d#0", level), Digest: fmt.Sprint(level)}
			r.Text = nft.FormatSpec(r)
			got, err := h.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: r}}})
			if errors.Is(err, maps.ErrExists) {
				refused++ // another rule's flow: nft would place it elsewhere
				continue
			}
			if err != nil {
				t.Fatalf("level %d: %v", level, err)
			}
			h.checkFlows()
			h.model.Add(r)
			levels, ids = append(levels, level), append(ids, got[0])
		}
		if refused == 0 || refused > 80 {
			t.Fatalf("%d of 160 rules refused for a flow another holds: the test no longer exercises that, or little else", refused)
		}
		var frames [][]byte
		for i := 0; i < 800; i++ {
			frames = append(frames, addressFrame(198<<24|18<<16|uint32(rng.Intn(1<<10)), 198<<24|19<<16|uint32(rng.Intn(1<<10)),
				uint16(rng.Intn(40)), uint16(rng.Intn(40))))
		}
		frames = append(frames, frames...) // the second time through the cache
		defer testutil.OnOneCPU(t)()       // the cache is per CPU
		hits := h.cacheHits()
		h.check(frames)
		if h.cacheHits()-hits < len(frames)/4 {
			t.Fatalf("%d cache hits: the cache was not exercised", h.cacheHits()-hits)
		}
		h.reopen()
		h.checkFlows()
		h.check(frames)
		for i := range ids {
			if i%2 == 1 {
				if _, err := h.table.Apply(maps.Change{Delete: []maps.RuleID{ids[i]}}); err != nil {
					t.Fatal(err)
				}
				if !h.model.DeleteLevel(levels[i]) {
					t.Fatalf("the model has no rule of level %d", levels[i])
				}
			}
		}
		h.checkFlows()
		h.check(frames)
	})
}

// randomAddressRangedMatch is a UDP match of a source prefix in
// 198.18.0.0/22 and a destination prefix in 198.19.0.0/22 (each of
// /24 to /32), its mask keeping /24 or /28 of each and the rest a prefix checked as a
// range, with destination ports any or a range.
func randomAddressRangedMatch(rng *rand.Rand) rule.Match {
	var m rule.Match
	m.Key.EthType[0], m.Mask.EthType[0] = rule.HostToBE16(rule.EthPIP), 0xffff
	m.Key.IpProto, m.Mask.IpProto = 17, 0xff
	prefix := func(base uint32, key, mask []byte) rule.Prefix4 {
		bits := uint8(24 + rng.Intn(9))
		kept := min(bits, uint8(24+4*rng.Intn(2)))
		return mergedPrefix(rule.Prefix4{Addr: base | uint32(rng.Intn(1<<10)), Bits: bits}, kept, key, mask)
	}
	m.SrcAddrs = prefix(198<<24|18<<16, m.Key.SrcIp[:4], m.Mask.SrcIp[:4])
	m.DstAddrs = prefix(198<<24|19<<16, m.Key.DstIp[:4], m.Mask.DstIp[:4])
	if rng.Intn(2) == 0 {
		lo := uint16(rng.Intn(30))
		m.DstPortRange = rule.PortRange{Min: lo, Max: lo + uint16(rng.Intn(10))}
	}
	m.Key = rule.MaskKey(&m.Key, &m.Mask)
	return m
}

// addressFrame is a UDP frame from src to dst (host order) with these ports.
func addressFrame(src, dst uint32, sport, dport uint16) []byte {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	ip := func(a uint32) net.IP { return binary.BigEndian.AppendUint32(nil, a) }
	return testutil.Eth(mac, mac, nil, 0x0800, testutil.IPv4(ip(src), ip(dst), 17,
		testutil.IPv4Opts{}, testutil.UDP(sport, dport, make([]byte, 18))))
}

// mergedPrefix writes p into key and mask as nft's merging does, the mask
// keeping kept bits, and returns the prefix its flow checks as a range
// (none when the mask keeps it whole).
func mergedPrefix(p rule.Prefix4, kept uint8, key, mask []byte) rule.Prefix4 {
	lo, _ := p.Range()
	binary.BigEndian.PutUint32(key, lo)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-kept))
	if p.Bits == kept {
		return rule.Prefix4{}
	}
	return rule.Prefix4{Addr: lo, Bits: p.Bits}
}
