package testutil

import (
	"encoding/binary"
	"net"
)

// VLAN is one 802.1Q/802.1ad tag.
type VLAN struct {
	TPID uint16
	TCI  uint16
}

// Eth builds an Ethernet frame: MACs, tags, ethertype, payload.
func Eth(dst, src net.HardwareAddr, vlans []VLAN, ethType uint16, payload []byte) []byte {
	b := make([]byte, 0, 14+4*len(vlans)+len(payload))
	b = append(b, dst[:6]...)
	b = append(b, src[:6]...)
	for _, v := range vlans {
		b = binary.BigEndian.AppendUint16(b, v.TPID)
		b = binary.BigEndian.AppendUint16(b, v.TCI)
	}
	b = binary.BigEndian.AppendUint16(b, ethType)
	return append(b, payload...)
}

// IPv4Opts are the IPv4 header fields tests vary.
type IPv4Opts struct {
	TOS, TTL uint8
	FragOff  uint16 // flags (MF 0x2000) and offset in 8-byte units
}

// IPv4 builds an IPv4 packet with a correct header checksum.
func IPv4(src, dst net.IP, proto uint8, o IPv4Opts, l4 []byte) []byte {
	if o.TTL == 0 {
		o.TTL = 64
	}
	h := make([]byte, 20)
	h[0] = 0x45
	h[1] = o.TOS
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(h[4:], 1)
	binary.BigEndian.PutUint16(h[6:], o.FragOff)
	h[8] = o.TTL
	h[9] = proto
	copy(h[12:16], src.To4())
	copy(h[16:20], dst.To4())
	binary.BigEndian.PutUint16(h[10:], Checksum(h))
	return append(h, l4...)
}

// Checksum is the Internet checksum of b (RFC 1071).
func Checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xFFFF {
		s = s&0xFFFF + s>>16
	}
	return ^uint16(s)
}

// IPv6 builds an IPv6 packet; ext are extension headers, already chained
// (the first one's type is next).
func IPv6(src, dst net.IP, next uint8, tclass, hop uint8, ext []byte, l4 []byte) []byte {
	if hop == 0 {
		hop = 64
	}
	h := make([]byte, 40)
	binary.BigEndian.PutUint32(h, 6<<28|uint32(tclass)<<20)
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
	h[6], h[7] = next, hop
	copy(h[8:24], src.To16())
	copy(h[24:40], dst.To16())
	return append(append(h, ext...), l4...)
}

// UDP builds a UDP datagram (checksum 0: none, valid over IPv4).
func UDP(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// TCP builds a 20-byte TCP header with the given flags.
func TCP(sport, dport uint16, flags uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[12:], 5<<12|flags&0x0FFF)
	return b
}

// ICMP builds an ICMP (or ICMPv6) header with 4 bytes of rest.
func ICMP(typ, code uint8) []byte { return []byte{typ, code, 0, 0, 0, 0, 0, 0} }

// ARP builds an Ethernet/IPv4 ARP packet.
func ARP(op uint16, sha net.HardwareAddr, sip net.IP, tha net.HardwareAddr, tip net.IP) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 0}
	binary.BigEndian.PutUint16(b[6:], op)
	b = append(b, sha[:6]...)
	b = append(b, sip.To4()...)
	b = append(b, tha[:6]...)
	return append(b, tip.To4()...)
}
