package refmodel

import "encoding/binary"

// flowerKey is the part of cls_flower's struct fl_flow_key that xdpflow's
// key has, as fl_classify (net/sched/cls_flower.c) leaves it for a frame:
// fl_clear_masked_range zeroes it, skb_flow_dissect fills what it reaches
// and the rest stays zero. fl_classify ignores whether the dissector
// returned true or false, so a malformed header leaves zeros, not a miss.
type flowerKey struct {
	nProto  uint16 // basic.n_proto: the dissector's protocol when it stopped
	ipProto uint8  // basic.ip_proto
	// control.flags: FLOW_DIS_IS_FRAGMENT, FLOW_DIS_FIRST_FRAG; fragHdr
	// when an IPv6 fragment header set them.
	frag, firstFrag, fragHdr bool
	// tags is how many VLAN headers the dissector walked; vlan the first
	// two (FLOW_DISSECTOR_KEY_VLAN, FLOW_DISSECTOR_KEY_CVLAN).
	tags               int
	vlan               [2]vlanKey
	cutTag             bool     // a tag in the data cut short (FLOW_DISSECT_RET_OUT_BAD)
	tos, ttl           uint8    // FLOW_DISSECTOR_KEY_IP
	src, dst           [16]byte // IPv4 (first four bytes), IPv6 or ARP addresses
	sport, dport       uint16   // FLOW_DISSECTOR_KEY_PORTS(_RANGE)
	tcpFlags           uint16   // FLOW_DISSECTOR_KEY_TCP
	icmpType, icmpCode uint8    // FLOW_DISSECTOR_KEY_ICMP
	arpOp              uint8    // FLOW_DISSECTOR_KEY_ARP
	arpSha, arpTha     [6]byte
	arpKeyed           bool // the ARP keys were filled (else they are zero)
	// optHdrs counts the IPv6 hop-by-hop, routing and destination options
	// headers walked.
	optHdrs int
	// thoff is where the dissector stopped (key_control->thoff, before
	// its clamp to skb->len): the transport header of an IP packet.
	thoff int
	// encap names a protocol the dissector continues into, replacing
	// n_proto with the payload's; the model does not follow it.
	encap string
}

// vlanKey is struct flow_dissector_key_vlan: the TCI keeps its DEI bit,
// which flower has no key for.
type vlanKey struct {
	tpid, tci, ethType uint16
}

// Dissector results (enum flow_dissect_ret).
type dissectRet int

const (
	retOutGood dissectRet = iota
	retOutBad
	retProtoAgain
	retIPProtoAgain
	retContinue
)

// maxFlowDissectHdrs is MAX_FLOW_DISSECT_HDRS: how many times the
// dissector goes round again (a VLAN tag, an IPv6 extension header, MPLS
// after IP) before it stops where it is.
const maxFlowDissectHdrs = 15

// IP protocol numbers the dissector switches on (include/uapi/linux/in.h,
// include/net/ipv6.h).
const (
	ipprotoHop      = 0
	ipprotoICMP     = 1
	ipprotoIPIP     = 4
	ipprotoTCP      = 6
	ipprotoUDP      = 17
	ipprotoDCCP     = 33
	ipprotoIPv6     = 41
	ipprotoRouting  = 43
	ipprotoFragment = 44
	ipprotoGRE      = 47
	ipprotoESP      = 50
	ipprotoAH       = 51
	ipprotoICMPv6   = 58
	ipprotoNone     = 59
	ipprotoDest     = 60
	ipprotoSCTP     = 132
	ipprotoUDPLite  = 136
	ipprotoMPLS     = 137
)

// dissector is one run of __skb_flow_dissect (net/core/flow_dissector.c)
// with the flags fl_classify passes, FLOW_DISSECTOR_F_STOP_BEFORE_ENCAP
// (no FLOW_DISSECTOR_F_PARSE_1ST_FRAG), over a skb that did not come
// through a BPF flow dissector or a DSA tagger.
type dissector struct {
	s       *skb
	k       flowerKey
	proto   uint16
	nhoff   int
	ipProto uint8
	hdrs    int
	hwTag   bool // the untagged outer tag is still to be walked
}

// have reports whether n bytes at off are in the skb, as
// __skb_header_pointer needs.
func (d *dissector) have(off, n int) bool { return off >= 0 && off+n <= len(d.s.frame) }

func (d *dissector) be16(off int) uint16 { return binary.BigEndian.Uint16(d.s.frame[off:]) }

// allowed is skb_flow_dissect_allowed: one more header, within the budget.
func (d *dissector) allowed() bool {
	d.hdrs++
	return d.hdrs <= maxFlowDissectHdrs
}

// dissect runs the dissector as fl_classify does and returns the key.
func dissect(s *skb) flowerKey {
	d := &dissector{s: s, proto: s.skbProtocol(), nhoff: s.network, hwTag: s.vlan}
	for {
		// proto_again
		switch d.network() {
		case retProtoAgain:
			if d.allowed() {
				continue
			}
			return d.out()
		case retOutGood, retOutBad:
			return d.out()
		}
		// ip_proto_again
		for {
			ret := d.transport()
			if !d.k.frag {
				d.ports()
			}
			if ret == retIPProtoAgain && d.allowed() {
				continue
			}
			if ret == retProtoAgain && d.allowed() {
				break
			}
			return d.out()
		}
	}
}

// out is the dissector's out: label.
func (d *dissector) out() flowerKey {
	d.k.thoff = d.nhoff
	d.k.nProto = d.proto
	d.k.ipProto = d.ipProto
	return d.k
}

// network is the dissector's switch on the network protocol.
func (d *dissector) network() dissectRet {
	switch d.proto {
	case ethPIP:
		return d.ipv4()
	case ethPIPv6:
		return d.ipv6()
	case ethP8021Q, ethP8021AD:
		return d.vlanTag()
	case ethPARP, ethPRARP:
		return d.arp()
	case ethPMPLSUC, ethPMPLSMC:
		// __skb_flow_dissect_mpls: flower masks never use the MPLS
		// keys xdpflow lacks, so it stops here.
		d.nhoff += 4
		return retOutGood
	case ethPPPPSes:
		// The PPP protocol decides: IP, IPv6 and MPLS go round again
		// with n_proto replaced.
		d.k.encap = "PPPoE session"
		return retOutGood
	case ethPBatman:
		// __skb_flow_dissect_batadv goes on into the inner frame.
		d.k.encap = "batman-adv"
		return retOutGood
	case ethPHSR, ethPPRP:
		// The HSR/PRP tag's encapsulated protocol replaces n_proto.
		d.k.encap = "HSR/PRP"
		return retOutGood
	}
	// TIPC, FCoE and PTP stop with n_proto unchanged, as does anything
	// the dissector does not know (FLOW_DISSECT_RET_OUT_BAD); none of
	// them has keys xdpflow carries.
	return retOutBad
}

func (d *dissector) ipv4() dissectRet {
	f, off := d.s.frame, d.nhoff
	// No version check: an IPv4 ethertype is dissected as IPv4.
	if !d.have(off, 20) || f[off]&0x0F < 5 {
		return retOutBad
	}
	d.nhoff += int(f[off]&0x0F) * 4
	d.ipProto = f[off+9]
	copy(d.k.src[:4], f[off+12:off+16])
	copy(d.k.dst[:4], f[off+16:off+20])
	// __skb_flow_dissect_ipv4: tos and ttl, fragment or not.
	d.k.tos, d.k.ttl = f[off+1], f[off+8]
	// ip_is_fragment: MF or an offset. Without
	// FLOW_DISSECTOR_F_PARSE_1ST_FRAG no fragment gets further.
	if frag := d.be16(off + 6); frag&0x3FFF != 0 {
		d.k.frag = true
		d.k.firstFrag = frag&0x1FFF == 0
		return retOutGood
	}
	return retContinue
}

func (d *dissector) ipv6() dissectRet {
	f, off := d.s.frame, d.nhoff
	// No version or payload length check.
	if !d.have(off, 40) {
		return retOutBad
	}
	d.ipProto = f[off+6]
	d.nhoff += 40
	copy(d.k.src[:], f[off+8:off+24])
	copy(d.k.dst[:], f[off+24:off+40])
	// __skb_flow_dissect_ipv6: ipv6_get_dsfield and the hop limit.
	d.k.tos = uint8(d.be16(off) >> 4)
	d.k.ttl = f[off+7]
	return retContinue
}

// vlanTag walks one VLAN header: the untagged outer tag from the skb's
// metadata first, then tags in the data. Only the first two are keyed;
// the rest are walked without keys.
func (d *dissector) vlanTag() dissectRet {
	tpid := d.proto
	var tci uint16
	if d.hwTag {
		d.hwTag = false
		tci, d.proto = d.s.vlanTCI, d.s.protocol
	} else {
		if !d.have(d.nhoff, 4) {
			d.k.cutTag = true
			return retOutBad
		}
		tci, d.proto = d.be16(d.nhoff), d.be16(d.nhoff+2)
		d.nhoff += 4
	}
	if d.k.tags < 2 {
		d.k.vlan[d.k.tags] = vlanKey{tpid: tpid, tci: tci, ethType: d.proto}
	}
	d.k.tags++
	return retProtoAgain
}

// arp is __skb_flow_dissect_arp: Ethernet/IPv4 requests and replies with
// the whole body there, or no keys at all.
func (d *dissector) arp() dissectRet {
	f, off := d.s.frame, d.nhoff
	if !d.have(off, 8) {
		return retOutBad
	}
	if d.be16(off) != 1 || d.be16(off+2) != ethPIP || f[off+4] != 6 || f[off+5] != 4 {
		return retOutBad
	}
	// The whole 16-bit opcode is checked; only its low byte is kept.
	op := d.be16(off + 6)
	if op != 1 && op != 2 {
		return retOutBad
	}
	if !d.have(off+8, 20) {
		return retOutBad
	}
	b := f[off+8:]
	d.k.arpKeyed = true
	d.k.arpOp = uint8(op)
	copy(d.k.arpSha[:], b[0:6])
	copy(d.k.src[:4], b[6:10])
	copy(d.k.arpTha[:], b[10:16])
	copy(d.k.dst[:4], b[16:20])
	return retOutGood
}

// transport is the dissector's switch on the IP protocol.
func (d *dissector) transport() dissectRet {
	f, off := d.s.frame, d.nhoff
	switch d.ipProto {
	case ipprotoGRE, ipprotoIPIP, ipprotoIPv6:
		// FLOW_DISSECTOR_F_STOP_BEFORE_ENCAP.
		return retOutGood
	case ipprotoHop, ipprotoRouting, ipprotoDest:
		if d.proto != ethPIPv6 {
			return retContinue
		}
		if !d.have(off, 2) {
			return retOutBad
		}
		d.ipProto = f[off]
		d.nhoff += (int(f[off+1]) + 1) << 3
		d.k.optHdrs++
		return retIPProtoAgain
	case ipprotoFragment:
		if d.proto != ethPIPv6 {
			return retContinue
		}
		if !d.have(off, 8) {
			return retOutBad
		}
		d.k.frag, d.k.fragHdr = true, true
		d.nhoff += 8
		d.ipProto = f[off]
		d.k.firstFrag = d.be16(off+2)&0xFFF8 == 0
		return retOutGood
	case ipprotoMPLS:
		// Not behind FLOW_DISSECTOR_F_STOP_BEFORE_ENCAP: n_proto becomes
		// MPLS.
		d.proto = ethPMPLSUC
		return retProtoAgain
	case ipprotoTCP:
		// __skb_flow_dissect_tcp: a whole header, data offset 5 or more.
		if d.have(off, 20) && f[off+12]>>4 >= 5 {
			d.k.tcpFlags = d.be16(off+12) & 0x0FFF
		}
	case ipprotoICMP, ipprotoICMPv6:
		// skb_flow_get_icmp_tci: a whole struct icmphdr (8 bytes), for
		// either protocol number under either IP version.
		if d.have(off, 8) {
			d.k.icmpType, d.k.icmpCode = f[off], f[off+1]
		}
	}
	return retContinue
}

// ports is __skb_flow_dissect_ports, run after every pass of the IP
// protocol switch: __skb_flow_get_ports at proto_ports_offset
// (include/linux/in.h), zero when the protocol has none or the four
// bytes are not there.
func (d *dissector) ports() {
	poff := -1
	switch d.ipProto {
	case ipprotoTCP, ipprotoUDP, ipprotoDCCP, ipprotoESP, ipprotoSCTP, ipprotoUDPLite:
		poff = 0
	case ipprotoAH:
		poff = 4
	}
	d.k.sport, d.k.dport = 0, 0
	if poff >= 0 && d.have(d.nhoff+poff, 4) {
		d.k.sport, d.k.dport = d.be16(d.nhoff+poff), d.be16(d.nhoff+poff+2)
	}
}
