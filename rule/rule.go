// Package rule is xdpflow's source-independent rule model: what a rule
// matches, what it does, where it came from. Translators (flower/, nft/)
// produce rules; Expand turns a rule into the masked entries the datapath
// holds. Nothing here touches maps.
package rule

import (
	"fmt"
	"math"
	"math/bits"
	"net"
	"time"

	"github.com/xdpflow/xdpflow/bpf"
)

// Key is the datapath's flow key (struct xf_key), used both as a value and
// as a mask. Network-order fields are stored in network order.
type Key = bpf.XdpflowXfKey

// Source says who owns a rule.
type Source uint32

const (
	SourceCLI Source = iota // xdpflow filter add
	SourceTC                // mirrored from a kernel TC flower filter
	SourceNFT               // mirrored from an nftables rule
)

func (s Source) String() string {
	switch s {
	case SourceCLI:
		return "cli"
	case SourceTC:
		return "tc"
	case SourceNFT:
		return "nft"
	}
	return fmt.Sprintf("source(%d)", uint32(s))
}

// Well-known ethertypes (host order).
const (
	EthPAll    = 0x0003 // tc "protocol all"
	EthPIP     = 0x0800
	EthPARP    = 0x0806
	EthPRARP   = 0x8035
	EthPIPv6   = 0x86DD
	EthP8021Q  = 0x8100
	EthP8021AD = 0x88A8
)

// Frag flags as in struct xf_key.ip_frag.
const (
	FragIsFragment = 0x01
	FragFirst      = 0x02
)

// PortRange is an inclusive port range match. The zero value means "no range".
type PortRange struct {
	Min, Max uint16
}

// Set reports whether the range is in use.
func (r PortRange) Set() bool { return r != PortRange{} }

// Prefix4 is an IPv4 prefix (the address in host order) that a flow
// checks as an address range, beyond the address bits its mask keeps: the
// flow then shares the subtable of a shorter prefix. Bits 0: no prefix.
type Prefix4 struct {
	Addr uint32
	Bits uint8
}

// Set reports whether the prefix is in use.
func (p Prefix4) Set() bool { return p.Bits > 0 }

// Range is the prefix's addresses, inclusive (all of them when unset).
func (p Prefix4) Range() (lo, hi uint32) {
	if p.Bits == 0 {
		return 0, math.MaxUint32
	}
	m := ^uint32(0) << (32 - min(p.Bits, 32))
	return p.Addr & m, p.Addr | ^m
}

// Contains reports whether addr (host order) is in the prefix, or the
// prefix is unset.
func (p Prefix4) Contains(addr uint32) bool {
	lo, hi := p.Range()
	return addr >= lo && addr <= hi
}

// Prefix4Of is the prefix of the range lo-hi, which must be one.
func Prefix4Of(lo, hi uint32) Prefix4 {
	return Prefix4{Addr: lo, Bits: uint8(bits.LeadingZeros32(lo ^ hi))}
}

// Match is what a rule matches: a masked key plus optional port ranges,
// which Expand turns into prefix-masked entries, and optional IPv4
// prefixes checked beyond the mask (nft's, never a tc filter's).
type Match struct {
	Key, Mask          Key
	SrcPortRange       PortRange
	DstPortRange       PortRange
	SrcAddrs, DstAddrs Prefix4
}

// Ranged reports whether m has port ranges or address prefixes beyond its
// mask, which its entries carry whole (nft's) or expand (a tc filter's).
func (m *Match) Ranged() bool {
	return m.SrcPortRange.Set() || m.DstPortRange.Set() || m.SrcAddrs.Set() || m.DstAddrs.Set()
}

// Entry is m as one flow-table entry, its ranges whole.
func (m *Match) Entry() Entry {
	return Entry{Key: MaskKey(&m.Key, &m.Mask), Mask: m.Mask, SrcPorts: m.SrcPortRange, DstPorts: m.DstPortRange,
		SrcAddrs: m.SrcAddrs, DstAddrs: m.DstAddrs}
}

// KeyValue is one match key as the user wrote it, in tc's words: shown by
// `filter show` and in JSON ("dst_port": 53, "dst_ip": "10.0.0.0/8").
type KeyValue struct {
	Name  string
	Value any // uint64 or string
}

// ActionKind is what an action does.
type ActionKind int

const (
	ActDrop ActionKind = iota + 1
	ActPass
	ActRedirect // mirred egress redirect: out of Dev (XDP_TX when Dev is the ingress device)
	ActVlanPush
	ActVlanPop
	ActVlanModify
	ActSetEthSrc
	ActSetEthDst
)

// Action is one step of a rule's action list.
type Action struct {
	Kind      ActionKind
	Dev       string // redirect target
	Ifindex   int    // resolved redirect target
	VlanID    uint16
	VlanPrio  uint8
	HasPrio   bool   // vlan modify: priority given
	VlanProto uint16 // host order; 0x8100 by default
	MAC       net.HardwareAddr
}

// Terminal reports whether the action ends the action list.
func (a Action) Terminal() bool {
	switch a.Kind {
	case ActDrop, ActPass, ActRedirect:
		return true
	}
	return false
}

// Rule is one classification rule on one device's ingress.
type Rule struct {
	Source Source
	Dev    string
	Chain  uint32
	Prio   uint16 // tc "pref"; lower runs first
	// Level orders an nft rule's part instead (nft.Compile); Prio is 0.
	Level    uint32
	Handle   uint32
	Protocol uint16 // tc "protocol" ethertype, host order; EthPAll for all
	Match    Match
	// More are further matches: the rule matches a packet that Match or
	// any of them matches (an nft set, or `meta protocol` on tagged and
	// untagged frames). One counter counts them all.
	More []Match
	// Opaque: the match is not known, only the installed entries (an nft
	// rule reopened from its pinned spec, which records a digest of the
	// match; the daemon recompiles it from the kernel's ruleset).
	Opaque  bool
	Keys    []KeyValue // the match as written, for display
	Actions []Action
	SkipHW  bool
	SkipSW  bool
	// Keepalive: a rule TC holds too lets one packet per Keepalive and
	// CPU go on to the kernel, unchanged, so TC's counters and last-used
	// time move while XDP handles the rest (0: never). Whoever ages flows
	// by those counters (Open vSwitch) sees the flow in use.
	Keepalive time.Duration
	// Name identifies a rule that is one part of a rule of another source:
	// "netdev/filter/ingress/7#0" is part 0 of nft rule handle 7.
	Name string
	// Digest: what an nft rule is known by in place of its match (a
	// hash of its matches and actions, kept in its spec), "" for others.
	Digest string
	// Text is the canonical tc text of the rule (ruletext.Format), which is
	// what gets persisted.
	Text string
}

// Order is the rule's place in the lookup: TC (and CLI) filters by pref,
// then nftables rules by level, because the kernel runs the tc ingress hook
// before netfilter's netdev ingress hook.
func (r *Rule) Order() uint64 {
	if r.Source == SourceNFT {
		return 1<<32 | uint64(r.Level)
	}
	return uint64(r.Prio)
}

// Describe names the rule in messages.
func (r *Rule) Describe() string {
	if r.Name != "" {
		return fmt.Sprintf("%s %s", r.Source, r.Name)
	}
	return fmt.Sprintf("pref %d handle 0x%x", r.Prio, r.Handle)
}

// MaskGroup identifies the kernel's notion of a flower mask: rules with the
// same mask (and the same use of port ranges) in one priority are ordered by
// insertion; different masks in one priority by the mask's creation.
//
// nft rules are compiled so that no two rules of one level overlap
// (nft.Compile): their order within a level does not matter, so a level is
// one group.
func (r *Rule) MaskGroup() string {
	if r.Source == SourceNFT {
		return "nft"
	}
	m := r.Match
	b := KeyBytes(&m.Mask)
	flags := byte(0)
	if m.SrcPortRange.Set() {
		flags |= 1
	}
	if m.DstPortRange.Set() {
		flags |= 2
	}
	return string(append(b, flags))
}

// HostToBE16 converts a host-order value into the representation of a
// __be16 field in the generated Go structs (bpfel target only).
func HostToBE16(v uint16) uint16 { return bits.ReverseBytes16(v) }

// BE16ToHost is the inverse of HostToBE16.
func BE16ToHost(v uint16) uint16 { return bits.ReverseBytes16(v) }

// Overlaps reports whether some packet could match both a and b. It may
// answer true when none can (port ranges against masked ports), never
// false when one can.
func Overlaps(a, b *Match) bool {
	ka, kb, ma, mb := KeyWords(&a.Key), KeyWords(&b.Key), KeyWords(&a.Mask), KeyWords(&b.Mask)
	for i := range ka {
		if (ka[i]^kb[i])&ma[i]&mb[i] != 0 {
			return false
		}
	}
	disjoint := func(x, y PortRange) bool { return x.Set() && y.Set() && (x.Max < y.Min || y.Max < x.Min) }
	return !disjoint(a.SrcPortRange, b.SrcPortRange) && !disjoint(a.DstPortRange, b.DstPortRange)
}
