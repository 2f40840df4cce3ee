package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// describe shows a part's first entry in flower's words, with its masks
// spelled as the rule text spells them (numbers padded to their field's
// width).
func describe(m *rule.Match) []rule.KeyValue {
	var out []rule.KeyValue
	k, mk := m.Key, m.Mask
	add := func(name string, v any) { out = append(out, rule.KeyValue{Name: name, Value: v}) }
	hex16 := func(v, msk uint16) string {
		return ruletext.MaskedHex(uint64(rule.BE16ToHost(v)), uint64(rule.BE16ToHost(msk)), 0xffff, 4)
	}
	// number adds a field shown as a number when its mask is full (and
	// not at all when nothing of it is matched).
	number := func(name string, v, msk, full uint64, digits int) {
		if msk != 0 {
			add(name, ruletext.MaskedNumber(v, msk, full, digits))
		}
	}
	if mk.EthDst != [6]byte{} {
		add("dst_mac", ruletext.MaskedMAC(k.EthDst[:], mk.EthDst[:]))
	}
	if mk.EthSrc != [6]byte{} {
		add("src_mac", ruletext.MaskedMAC(k.EthSrc[:], mk.EthSrc[:]))
	}
	names := [3]string{"eth_type", "vlan_ethtype", "cvlan_ethtype"}
	for i := range mk.EthType {
		if mk.EthType[i] != 0 {
			add(names[i], hex16(k.EthType[i], mk.EthType[i]))
		}
	}
	if mk.L3Proto != 0 {
		add("protocol", hex16(k.L3Proto, mk.L3Proto))
	}
	tci := [2]string{"vlan_tci", "cvlan_tci"}
	for i := range mk.VlanTci {
		if mk.VlanTci[i] != 0 {
			add(tci[i], hex16(k.VlanTci[i], mk.VlanTci[i]))
		}
	}
	u8 := func(name string, v, msk uint8) { number(name, uint64(v), uint64(msk), 0xff, 2) }
	u8("ip_proto", k.IpProto, mk.IpProto)
	u8("ip_tos", k.IpTos, mk.IpTos)
	u8("ip_ttl", k.IpTtl, mk.IpTtl)
	u8("ip_frag", k.IpFrag, mk.IpFrag)
	if mk.TcpFlags != 0 {
		add("tcp_flags", hex16(k.TcpFlags, mk.TcpFlags))
	}
	v4 := mk.EthType[0] != 0 && rule.BE16ToHost(k.EthType[0]) == rule.EthPIP ||
		mk.EthType[1] != 0 && rule.BE16ToHost(k.EthType[1]) == rule.EthPIP ||
		mk.L3Proto != 0 && rule.BE16ToHost(k.L3Proto) == rule.EthPIP
	width := 16
	if v4 {
		width = 4
	}
	ip := func(name string, key, mask [16]byte, p rule.Prefix4) {
		if p.Set() { // the prefix the flow checks, not its subtable's
			key, mask = [16]byte{}, [16]byte{}
			binary.BigEndian.PutUint32(key[:4], p.Addr)
			binary.BigEndian.PutUint32(mask[:4], ^uint32(0)<<(32-p.Bits))
		}
		if mask != [16]byte{} {
			add(name, ruletext.MaskedIP(key[:width], mask[:width]))
		}
	}
	ip("src_ip", k.SrcIp, mk.SrcIp, m.SrcAddrs)
	ip("dst_ip", k.DstIp, mk.DstIp, m.DstAddrs)
	port := func(name string, v, msk uint16) {
		number(name, uint64(rule.BE16ToHost(v)), uint64(rule.BE16ToHost(msk)), 0xffff, 4)
	}
	port("src_port", k.SrcPort, mk.SrcPort)
	port("dst_port", k.DstPort, mk.DstPort)
	portRange := func(name string, r rule.PortRange) {
		if r.Set() {
			add(name, fmt.Sprintf("%d-%d", r.Min, r.Max))
		}
	}
	portRange("src_port", m.SrcPortRange)
	portRange("dst_port", m.DstPortRange)
	u8("type", k.IcmpType, mk.IcmpType)
	u8("code", k.IcmpCode, mk.IcmpCode)
	return out
}
