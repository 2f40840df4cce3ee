// Package refmodel is a pure-Go reference model of the xdpflow classifier:
// the packet parser, TC flower's first-match semantics over rules (not over
// the datapath's expanded entries), and the actions. Tests run the real XDP
// program and this model on the same packets and compare.
package refmodel

import (
	"encoding/binary"

	"github.com/xdpflow/xdpflow/rule"
)

// Verdict is what happens to a packet.
type Verdict int

const (
	Pass Verdict = iota
	Drop
	TX
	Redirect
)

func (v Verdict) String() string {
	return [...]string{"pass", "drop", "tx", "redirect"}[v]
}

// Parse builds the flow key of a frame received on ifindex. ok is false for
// a frame the datapath must hand to the kernel unparsed. l2len is what tc
// does not count in bytes (Ethernet header and outer VLAN tag).
//
// The key is the one the kernel's flow dissector builds for cls_flower
// (net/core/flow_dissector.c, __skb_flow_dissect). Where nftables' netdev
// view of the same frame disagrees with it (nft_do_chain_netdev's
// validation, ipv6_find_hdr), or the kernel treats the frame specially
// before any hook runs (skb_vlan_untag, eth_type_trans), the frame is not
// parsed: neither source's meaning can then be wrong.
func Parse(frame []byte, ifindex uint32) (k rule.Key, l2len int, ok bool) {
	if len(frame) < 14 {
		return k, 0, false
	}
	k.Ifindex = ifindex
	copy(k.EthDst[:], frame[0:6])
	copy(k.EthSrc[:], frame[6:12])
	proto := binary.BigEndian.Uint16(frame[12:14])
	k.EthType[0] = rule.HostToBE16(proto)
	off, l2len := 14, 14
	for i := 0; i < 2 && isVLAN(proto); i++ {
		if len(frame) < off+4 {
			return k, 0, false
		}
		// skb_vlan_untag: pskb_may_pull(VLAN_HLEN + 2) or the frame is
		// dropped.
		if i == 0 && len(frame) < off+6 {
			return k, 0, false
		}
		k.VlanTci[i] = rule.HostToBE16(binary.BigEndian.Uint16(frame[off:]))
		proto = binary.BigEndian.Uint16(frame[off+2:])
		k.EthType[i+1] = rule.HostToBE16(proto)
		off += 4
		if i == 0 {
			l2len += 4
		}
	}
	// A third tag; and an 802.3 length, which eth_type_trans and
	// vlan_set_encap_proto turn into ETH_P_802_3/ETH_P_802_2.
	if isVLAN(proto) || proto < 0x0600 {
		return k, 0, false
	}
	l3 := frame[off:]
	switch proto {
	case rule.EthPIP:
		ok = parseIPv4(l3, &k)
	case rule.EthPIPv6:
		ok = parseIPv6(l3, &k)
	case rule.EthPARP, rule.EthPRARP:
		ok = parseARP(l3, &k)
	default:
		ok = true
	}
	return k, l2len, ok
}

func isVLAN(p uint16) bool { return p == rule.EthP8021Q || p == rule.EthP8021AD }

func parseIPv4(b []byte, k *rule.Key) bool {
	if len(b) < 20 || b[0]>>4 != 4 {
		return false
	}
	ihl := int(b[0]&0x0F) * 4
	if ihl < 20 {
		return false
	}
	// __nft_set_pktinfo_ipv4_validate: no transport header when the total
	// length exceeds the frame or is shorter than the header.
	if tot := int(binary.BigEndian.Uint16(b[2:4])); tot < ihl || tot > len(b) {
		return false
	}
	k.IpTos, k.IpTtl, k.IpProto = b[1], b[8], b[9]
	copy(k.SrcIp[:4], b[12:16])
	copy(k.DstIp[:4], b[16:20])
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&0x3FFF != 0 {
		// ip_is_fragment; cls_flower does not ask for
		// FLOW_DISSECTOR_F_PARSE_1ST_FRAG, so no fragment has ports.
		k.IpFrag = rule.FragIsFragment
		if frag&0x1FFF == 0 {
			k.IpFrag |= rule.FragFirst
		}
		return true
	}
	return parseL4(b[ihl:], k, 1)
}

func isIPv6Ext(h uint8) bool {
	switch h {
	case 0, 43, 44, 51, 60: // hop-by-hop, routing, fragment, AH, destination
		return true
	}
	return false
}

func parseIPv6(b []byte, k *rule.Key) bool {
	if len(b) < 40 || b[0]>>4 != 6 {
		return false
	}
	// nft_set_pktinfo_ipv6_validate: payload length within the frame.
	if int(binary.BigEndian.Uint16(b[4:6]))+40 > len(b) {
		return false
	}
	vtc := binary.BigEndian.Uint32(b[0:4])
	k.IpTos = uint8(vtc >> 20)
	k.IpTtl = b[7]
	copy(k.SrcIp[:], b[8:24])
	copy(k.DstIp[:], b[24:40])
	next := b[6]
	off := 40
	for i := 0; i < 8; i++ {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < off+2 {
				return false
			}
			next = b[off]
			off += (int(b[off+1]) + 1) * 8
			continue
		case 51: // AH: nft's l4proto stops at it (IP6_FH_F_AUTH), the dissector does not
			return false
		case 44: // fragment
			if len(b) < off+8 {
				return false
			}
			// An extension header next: the dissector keys it as the
			// protocol, ipv6_find_hdr does not.
			if isIPv6Ext(b[off]) {
				return false
			}
			k.IpProto = b[off]
			k.IpFrag = rule.FragIsFragment
			if binary.BigEndian.Uint16(b[off+2:])&0xFFF8 == 0 {
				k.IpFrag |= rule.FragFirst
			}
			return true
		}
		k.IpProto = next
		if len(b) < off {
			// Past the end: fine unless the L4 parse needs bytes.
			return parseL4(nil, k, 58)
		}
		return parseL4(b[off:], k, 58)
	}
	return false
}

func parseL4(b []byte, k *rule.Key, icmp uint8) bool {
	switch k.IpProto {
	case 6:
		// __skb_flow_dissect_tcp keys no flags below a 5-word data
		// offset; nft reads them raw.
		if len(b) < 20 || b[12]>>4 < 5 {
			return false
		}
		k.SrcPort, k.DstPort = rule.HostToBE16(binary.BigEndian.Uint16(b)), rule.HostToBE16(binary.BigEndian.Uint16(b[2:]))
		k.TcpFlags = rule.HostToBE16(binary.BigEndian.Uint16(b[12:]) & 0x0FFF)
	case 17, 132:
		if len(b) < 4 {
			return false
		}
		k.SrcPort, k.DstPort = rule.HostToBE16(binary.BigEndian.Uint16(b)), rule.HostToBE16(binary.BigEndian.Uint16(b[2:]))
	case icmp:
		// skb_flow_get_icmp_tci needs a whole struct icmphdr.
		if len(b) < 8 {
			return false
		}
		k.IcmpType, k.IcmpCode = b[0], b[1]
	}
	return true
}

func parseARP(b []byte, k *rule.Key) bool {
	if len(b) < 28 {
		return false
	}
	// __skb_flow_dissect_arp: Ethernet/IPv4 requests and replies only;
	// anything else leaves the ARP keys zero (FLOW_DISSECT_RET_OUT_BAD).
	if binary.BigEndian.Uint16(b[0:]) != 1 || binary.BigEndian.Uint16(b[2:]) != rule.EthPIP || b[4] != 6 || b[5] != 4 {
		return false
	}
	if op := binary.BigEndian.Uint16(b[6:]); op != 1 && op != 2 {
		return false
	}
	k.IpProto = uint8(binary.BigEndian.Uint16(b[6:]))
	copy(k.ArpSha[:], b[8:14])
	copy(k.SrcIp[:4], b[14:18])
	copy(k.ArpTha[:], b[18:24])
	copy(k.DstIp[:4], b[24:28])
	return true
}

// Matches reports whether rule r matches key k: the masked fields and the
// port ranges.
func Matches(r *rule.Rule, k *rule.Key) bool {
	if rule.MaskKey(k, &r.Match.Mask) != rule.MaskKey(&r.Match.Key, &r.Match.Mask) {
		return false
	}
	in := func(pr rule.PortRange, be uint16) bool {
		p := rule.BE16ToHost(be)
		return !pr.Set() || (p >= pr.Min && p <= pr.Max)
	}
	return in(r.Match.SrcPortRange, k.SrcPort) && in(r.Match.DstPortRange, k.DstPort)
}

// Result is the model's outcome for one packet.
type Result struct {
	Verdict Verdict
	Ifindex int    // Redirect target
	Frame   []byte // the frame as it leaves (actions applied)
	Rule    int    // index of the matching rule, -1 for none
	Bytes   int    // what the rule's byte counter grows by
}

// Run classifies frame against rules, which must be in lookup order
// (see Table), and applies the first match's actions.
func Run(rules []*rule.Rule, frame []byte, ifindex uint32) Result {
	out := append([]byte(nil), frame...)
	k, l2len, ok := Parse(frame, ifindex)
	if !ok {
		return Result{Verdict: Pass, Frame: out, Rule: -1}
	}
	for i, r := range rules {
		if !Matches(r, &k) {
			continue
		}
		res := Result{Rule: i, Bytes: len(frame) - l2len}
		res.Verdict, res.Ifindex, res.Frame = apply(r, out)
		return res
	}
	return Result{Verdict: Pass, Frame: out, Rule: -1}
}

func apply(r *rule.Rule, f []byte) (Verdict, int, []byte) {
	for _, a := range r.Actions {
		switch a.Kind {
		case rule.ActDrop:
			return Drop, 0, f
		case rule.ActPass:
			return Pass, 0, f
		case rule.ActRedirect:
			if a.Dev == r.Dev {
				return TX, 0, f
			}
			return Redirect, a.Ifindex, f
		case rule.ActVlanPush:
			tag := make([]byte, 4)
			binary.BigEndian.PutUint16(tag, a.VlanProto)
			binary.BigEndian.PutUint16(tag[2:], a.VlanID&0x0FFF|uint16(a.VlanPrio&7)<<13)
			f = append(f[:12:12], append(tag, f[12:]...)...)
		case rule.ActVlanPop:
			if len(f) >= 18 && isVLAN(binary.BigEndian.Uint16(f[12:])) {
				f = append(f[:12:12], f[16:]...)
			}
		case rule.ActVlanModify:
			if len(f) >= 16 && isVLAN(binary.BigEndian.Uint16(f[12:])) {
				tci := binary.BigEndian.Uint16(f[14:])
				tci = tci&^0x0FFF | a.VlanID&0x0FFF
				if a.HasPrio {
					tci = tci&0x1FFF | uint16(a.VlanPrio&7)<<13
				}
				binary.BigEndian.PutUint16(f[12:], a.VlanProto)
				binary.BigEndian.PutUint16(f[14:], tci)
			}
		case rule.ActSetEthDst:
			copy(f[0:6], a.MAC)
		case rule.ActSetEthSrc:
			copy(f[6:12], a.MAC)
		}
	}
	return Pass, 0, f
}
