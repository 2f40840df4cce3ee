package refmodel

import (
	"github.com/xdpflow/xdpflow/rule"
)

// Parse builds the flow key of a frame received on ifindex. ok is false
// for a frame the datapath must hand to the kernel unparsed (Punt says
// why). l2len is what tc does not count in bytes: the Ethernet header and
// the outer tag, which the receive path pulled before the hooks.
//
// The key is flower's (dissect) in xdpflow's layout, which also stands for
// what nft's netdev ingress reads of the frame (nftInfo). A frame whose
// two readings differ where the key has one field, or which the key
// cannot hold, is punted: the kernel then decides with its own readings.
func Parse(frame []byte, ifindex uint32) (k rule.Key, l2len int, ok bool) {
	k, l2len, why := parse(frame, ifindex)
	return k, l2len, why == ""
}

// Punt says why the datapath must hand frame to the kernel unparsed, or ""
// when it keys it.
func Punt(frame []byte) string {
	_, _, why := parse(frame, 0)
	return why
}

func parse(frame []byte, ifindex uint32) (rule.Key, int, string) {
	s, why := receive(frame)
	if why != "" {
		return rule.Key{}, 0, why
	}
	fk := dissect(&s)
	if why := oneKey(&s, &fk); why != "" {
		return rule.Key{}, 0, why
	}
	if why := nftAgrees(&s, &fk); why != "" {
		return rule.Key{}, 0, why
	}
	if why := datapathLimit(&s, &fk); why != "" {
		return rule.Key{}, 0, why
	}
	return keyOf(&s, &fk, ifindex), s.network, ""
}

// oneKey says why the key cannot hold flower's key for s, or "". The key
// has no n_proto of its own: a filter's protocol, vlan_ethtype and
// cvlan_ethtype are the frame's ethertypes (fl_set_key sets n_proto from
// the innermost of them), so n_proto must be the last ethertype the key
// has.
func oneKey(s *skb, fk *flowerKey) string {
	switch {
	case fk.encap != "":
		return "the dissector goes on into the " + fk.encap + " payload, replacing n_proto"
	case fk.tags > 2:
		return "more than two VLAN tags: flower keys two and takes n_proto from the innermost ethertype"
	case fk.cutTag:
		// The key's ethertype after the outer tag says a tag follows;
		// flower's cvlan key, its TPID too, stays zero.
		return "inner VLAN tag cut short: flower keys no cvlan"
	}
	last := s.skbProtocol()
	if fk.tags > 0 {
		last = fk.vlan[fk.tags-1].ethType
	}
	if fk.nProto != last {
		return "IP carrying MPLS: the dissector makes n_proto ETH_P_MPLS_UC"
	}
	return ""
}

// nftAgrees says where nft's view of an IP packet differs from flower's in
// a field the key has both read into, or "". Only a packet whose
// skb->protocol is IP or IPv6 (no tag or one) has an nft view beyond the
// link layer and meta protocol.
func nftAgrees(s *skb, fk *flowerKey) string {
	if s.protocol != ethPIP && s.protocol != ethPIPv6 {
		return ""
	}
	n := nftPktinfo(s)
	switch {
	case !n.l4:
		return "nft's pktinfo validation refuses the IP header: meta l4proto and transport payload break where flower keys ip_proto"
	case n.tprot != fk.ipProto:
		return "nft's transport protocol (ipv6_find_hdr) is not flower's ip_proto"
	case n.fragoff != 0 && !fk.frag:
		return "nft finds a later fragment flower does not"
	case fk.frag:
		// No transport key for a fragment; nft rules matching transport
		// fields leave fragments to the kernel (nft.Compile).
		return ""
	case n.thoff != fk.thoff:
		return "nft's transport header is not where the dissector stopped"
	}
	var l4 []byte // an extension header's length may point past the frame
	if n.thoff < len(s.frame) {
		l4 = s.frame[n.thoff:]
	}
	return transportAgrees(l4, fk.ipProto, s.protocol)
}

// transportAgrees compares what flower keys of a transport header with what
// nft's payload reads of the same bytes (l4, to the end of the frame),
// for the fields the key carries.
func transportAgrees(l4 []byte, proto uint8, l3 uint16) string {
	switch {
	case proto == ipprotoTCP && (len(l4) < 20 || l4[12]>>4 < 5):
		// __skb_flow_dissect_tcp keys no flags; nft reads them raw, or
		// breaks (ports too) past the frame.
		return "TCP header shorter than 20 bytes or data offset below 5: flower keys no flags, nft reads the bytes"
	case (proto == ipprotoUDP || proto == ipprotoSCTP) && len(l4) < 4:
		return "ports cut short: flower keys zero, nft breaks"
	case ((proto == ipprotoICMP && l3 == ethPIP) || (proto == ipprotoICMPv6 && l3 == ethPIPv6)) && len(l4) < 8:
		// skb_flow_get_icmp_tci needs a whole struct icmphdr; nft reads
		// type and code bytes on their own.
		return "ICMP header shorter than 8 bytes: flower keys no type or code, nft reads them"
	}
	return ""
}

// keyOf lays flower's key for s out as xdpflow's key.
func keyOf(s *skb, fk *flowerKey, ifindex uint32) rule.Key {
	var k rule.Key
	be := rule.HostToBE16
	k.Ifindex = ifindex
	copy(k.EthDst[:], s.frame[0:6])
	copy(k.EthSrc[:], s.frame[6:12])
	k.EthType[0] = be(s.skbProtocol())
	k.L3Proto = be(s.protocol)
	for i := 0; i < fk.tags; i++ {
		k.VlanTci[i] = be(fk.vlan[i].tci)
		k.EthType[i+1] = be(fk.vlan[i].ethType)
	}
	k.IpProto = fk.ipProto
	if fk.nProto == ethPARP || fk.nProto == ethPRARP {
		k.IpProto = fk.arpOp // flower's arp.op is where xdpflow keeps it
	}
	k.IpTos, k.IpTtl = fk.tos, fk.ttl
	if fk.frag {
		k.IpFrag = rule.FragIsFragment
		if fk.firstFrag {
			k.IpFrag |= rule.FragFirst
		}
	}
	k.TcpFlags = be(fk.tcpFlags)
	k.SrcIp, k.DstIp = fk.src, fk.dst
	k.SrcPort, k.DstPort = be(fk.sport), be(fk.dport)
	k.IcmpType, k.IcmpCode = fk.icmpType, fk.icmpCode
	k.ArpSha, k.ArpTha = fk.arpSha, fk.arpTha
	return k
}
