package ruletext

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// key parses one match key and its value into the match, and records it
// in the rule's Keys in the spelling Format writes back.
func (st *flowerState) key(k, v string) error {
	switch k {
	case "indev":
		ifi, err := net.InterfaceByName(v)
		if err != nil {
			return fmt.Errorf("flower: indev %q: no such device", v)
		}
		m := &st.r.Match
		m.Key.Ifindex, m.Mask.Ifindex = uint32(ifi.Index), 0xFFFFFFFF
		st.addKey(k, v)
		return nil
	case "dst_mac", "src_mac", "arp_sha", "arp_tha":
		return st.macKey(k, v)
	case "vlan_id", "cvlan_id", "vlan_prio", "cvlan_prio":
		return st.vlanTCIKey(k, v)
	case "vlan_ethtype", "cvlan_ethtype":
		return st.vlanEthTypeKey(k, v)
	case "ip_proto":
		return st.ipProtoKey(k, v)
	case "ip_tos", "ip_ttl":
		return st.ipByteKey(k, v)
	case "ip_flags":
		if err := st.needIP(k); err != nil {
			return err
		}
		val, mask, err := parseIPFlags(v)
		if err != nil {
			return err
		}
		m := &st.r.Match
		m.Key.IpFrag, m.Mask.IpFrag = val, mask
		st.addKey(k, FormatIPFlags(val, mask))
		return nil
	case "dst_ip", "src_ip", "arp_tip", "arp_sip":
		return st.addrKey(k, v)
	case "dst_port", "src_port":
		if err := st.needL4(k); err != nil {
			return err
		}
		return st.port(k, v)
	case "tcp_flags":
		return st.tcpFlagsKey(k, v)
	case "type", "code":
		return st.icmpKey(k, v)
	case "arp_op":
		return st.arpOpKey(k, v)
	}
	return fmt.Errorf("flower: unknown key %q", k)
}

func (st *flowerState) macKey(k, v string) error {
	if k == "arp_sha" || k == "arp_tha" {
		if err := st.needARP(k); err != nil {
			return err
		}
	}
	val, mask, err := parseMaskedMAC(v)
	if err != nil {
		return fmt.Errorf("flower: %s: %w", k, err)
	}
	m := &st.r.Match
	var kf, mf *[6]uint8
	switch k {
	case "dst_mac":
		kf, mf = &m.Key.EthDst, &m.Mask.EthDst
	case "src_mac":
		kf, mf = &m.Key.EthSrc, &m.Mask.EthSrc
	case "arp_sha":
		kf, mf = &m.Key.ArpSha, &m.Mask.ArpSha
	default:
		kf, mf = &m.Key.ArpTha, &m.Mask.ArpTha
	}
	copy(kf[:], val)
	copy(mf[:], mask)
	st.addKey(k, MaskedMAC(val, mask))
	return nil
}

// vlanTCIKey sets the id or priority bits of the outer (vlan_) or inner
// (cvlan_) tag's TCI.
func (st *flowerState) vlanTCIKey(k, v string) error {
	outer := !strings.HasPrefix(k, "cvlan_")
	if err := st.needVLAN(k, outer); err != nil {
		return err
	}
	var n uint64
	var bits, mask uint16
	if strings.HasSuffix(k, "_id") {
		id, err := strconv.ParseUint(v, 0, 16)
		if err != nil || id > 4095 {
			return fmt.Errorf("flower: invalid %s %q (0-4095)", k, v)
		}
		n, bits, mask = id, uint16(id), 0x0FFF
	} else {
		p, err := strconv.ParseUint(v, 0, 8)
		if err != nil || p > 7 {
			return fmt.Errorf("flower: invalid %s %q (0-7)", k, v)
		}
		n, bits, mask = p, uint16(p)<<13, 0xE000
	}
	m := &st.r.Match
	i := tagIndex(outer)
	m.Key.VlanTci[i] = rule.HostToBE16(rule.BE16ToHost(m.Key.VlanTci[i]) | bits)
	m.Mask.VlanTci[i] = rule.HostToBE16(rule.BE16ToHost(m.Mask.VlanTci[i]) | mask)
	st.addKey(k, n)
	return nil
}

func (st *flowerState) vlanEthTypeKey(k, v string) error {
	outer := k == "vlan_ethtype"
	if err := st.needVLAN(k, outer); err != nil {
		return err
	}
	t, err := ParseEthType(v)
	if err != nil || t == rule.EthPAll {
		return fmt.Errorf("flower: invalid %s %q", k, v)
	}
	i := 1
	if !outer {
		i = 2
	}
	m := &st.r.Match
	m.Key.EthType[i], m.Mask.EthType[i] = rule.HostToBE16(t), 0xFFFF
	st.l3 = t
	st.addKey(k, EthTypeName(t))
	return nil
}

func tagIndex(outer bool) int {
	if outer {
		return 0
	}
	return 1
}

func (st *flowerState) ipProtoKey(k, v string) error {
	if err := st.needIP(k); err != nil {
		return err
	}
	p, byName, ok := parseIPProto(v)
	if !ok {
		return fmt.Errorf("flower: invalid ip_proto %q: a name (tcp, udp, sctp, icmp, icmpv6, l2tp, esp, ah) or a hex number, as tc reads it", v)
	}
	// tc refuses icmp and icmpv6 under the other IP version by name only.
	if byName && ((p == 1 && st.l3 == rule.EthPIPv6) || (p == 58 && st.l3 == rule.EthPIP)) {
		return fmt.Errorf("flower: ip_proto %s does not go with protocol %s", v, EthTypeName(st.l3))
	}
	m := &st.r.Match
	m.Key.IpProto, m.Mask.IpProto = p, 0xFF
	st.ipProto = int(p)
	st.addKey(k, ipProtoName(p))
	return nil
}

// ipByteKey is ip_tos or ip_ttl, a byte under a mask.
func (st *flowerState) ipByteKey(k, v string) error {
	if err := st.needIP(k); err != nil {
		return err
	}
	m := &st.r.Match
	kf, mf := &m.Key.IpTos, &m.Mask.IpTos
	if k == "ip_ttl" {
		kf, mf = &m.Key.IpTtl, &m.Mask.IpTtl
	}
	val, mask, err := maskedByte(k, v, kf, mf)
	if err != nil {
		return err
	}
	st.addKey(k, MaskedHex(uint64(val), uint64(mask), 0xFF, 0))
	return nil
}

// maskedByte parses a byte under a mask into a key field and its mask.
func maskedByte(k, v string, kf, mf *uint8) (val, mask uint8, err error) {
	val, mask, err = parseMaskedU8(v)
	if err != nil {
		return 0, 0, fmt.Errorf("flower: invalid %s %q", k, v)
	}
	*kf, *mf = val&mask, mask
	return val, mask, nil
}

// addrKey is an IP address or prefix: dst_ip and src_ip, or ARP's
// arp_tip and arp_sip, which share their key fields.
func (st *flowerState) addrKey(k, v string) error {
	arp := strings.HasPrefix(k, "arp_")
	if arp {
		if err := st.needARP(k); err != nil {
			return err
		}
	} else if err := st.needIP(k); err != nil {
		return err
	}
	ipn, err := parsePrefix(v)
	if err == nil && st.typed {
		err = tcPrefix(v, ipn)
	}
	if err != nil {
		return fmt.Errorf("flower: %s: %w", k, err)
	}
	want4 := arp || st.l3 == rule.EthPIP
	if (ipn.IP.To4() != nil) != want4 {
		return fmt.Errorf("flower: %s %s: address family does not match protocol %s", k, v, EthTypeName(st.l3))
	}
	m := &st.r.Match
	kf, mf := &m.Key.SrcIp, &m.Mask.SrcIp
	if k == "dst_ip" || k == "arp_tip" {
		kf, mf = &m.Key.DstIp, &m.Mask.DstIp
	}
	if want4 {
		copy(kf[:4], ipn.IP.To4())
		copy(mf[:4], ipn.Mask)
	} else {
		copy(kf[:], ipn.IP.To16())
		copy(mf[:], ipn.Mask)
	}
	st.addKey(k, MaskedIP(ipn.IP, ipn.Mask))
	return nil
}

// port is a port under a mask, or a range ("1000-2000").
func (st *flowerState) port(k, v string) error {
	m := &st.r.Match
	src := k == "src_port"
	if lo, hi, ok := strings.Cut(v, "-"); ok {
		a, err1 := strconv.ParseUint(lo, 0, 16)
		b, err2 := strconv.ParseUint(hi, 0, 16)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("flower: invalid %s range %q", k, v)
		}
		if a >= b {
			return fmt.Errorf("flower: invalid %s range %q (min must be smaller than max)", k, v)
		}
		pr := rule.PortRange{Min: uint16(a), Max: uint16(b)}
		if src {
			m.SrcPortRange = pr
		} else {
			m.DstPortRange = pr
		}
		st.addKey(k, fmt.Sprintf("%d-%d", a, b))
		return nil
	}
	val, mask, err := parseMaskedUint(v, 0xFFFF)
	if err != nil {
		return fmt.Errorf("flower: invalid %s %q", k, v)
	}
	kv, mv := rule.HostToBE16(uint16(val&mask)), rule.HostToBE16(uint16(mask))
	if src {
		m.Key.SrcPort, m.Mask.SrcPort = kv, mv
	} else {
		m.Key.DstPort, m.Mask.DstPort = kv, mv
	}
	st.addKey(k, MaskedNumber(val, mask, 0xFFFF, 0))
	return nil
}

func (st *flowerState) tcpFlagsKey(k, v string) error {
	if st.ipProto != 6 {
		return errors.New("flower: \"tcp_flags\" needs ip_proto tcp")
	}
	val, mask, err := parseMaskedUint(v, 0x0FFF)
	if err != nil {
		return fmt.Errorf("flower: invalid tcp_flags %q", v)
	}
	m := &st.r.Match
	m.Key.TcpFlags, m.Mask.TcpFlags = rule.HostToBE16(uint16(val&mask)), rule.HostToBE16(uint16(mask))
	st.addKey(k, MaskedHex(val, mask, 0x0FFF, 0))
	return nil
}

// icmpKey is ICMP's or ICMPv6's type or code, a byte under a mask.
func (st *flowerState) icmpKey(k, v string) error {
	// flower_parse_icmp: ICMP under protocol ip, ICMPv6 under ipv6 only.
	if !(st.ipProto == 1 && st.l3 == rule.EthPIP) && !(st.ipProto == 58 && st.l3 == rule.EthPIPv6) {
		return fmt.Errorf("flower: %q needs ip_proto icmp (protocol ip) or icmpv6 (protocol ipv6)", k)
	}
	m := &st.r.Match
	kf, mf := &m.Key.IcmpType, &m.Mask.IcmpType
	if k == "code" {
		kf, mf = &m.Key.IcmpCode, &m.Mask.IcmpCode
	}
	val, mask, err := maskedByte(k, v, kf, mf)
	if err != nil {
		return err
	}
	st.addKey(k, MaskedNumber(uint64(val), uint64(mask), 0xFF, 0))
	return nil
}

// arpOpKey is ARP's opcode, which the key keeps in IpProto.
func (st *flowerState) arpOpKey(k, v string) error {
	if err := st.needARP(k); err != nil {
		return err
	}
	var op uint8
	switch v {
	case "request":
		op = 1
	case "reply":
		op = 2
	default:
		n, err := strconv.ParseUint(v, 0, 8)
		if err != nil {
			return fmt.Errorf("flower: invalid arp_op %q (request, reply or 0-255)", v)
		}
		op = uint8(n)
	}
	m := &st.r.Match
	m.Key.IpProto, m.Mask.IpProto = op, 0xFF
	name := strconv.Itoa(int(op))
	if op == 1 {
		name = "request"
	} else if op == 2 {
		name = "reply"
	}
	st.addKey(k, name)
	return nil
}
