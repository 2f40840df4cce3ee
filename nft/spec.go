package nft

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// SpecPrefix starts the persisted text of every nft rule part.
const SpecPrefix = "nft "

// FormatSpec is the text pinned for one installed part:
// "nft netdev/t/c/5#0 pref 3 digest 0123abcd action drop". The entries
// themselves are pinned in the flows map; the digest names them, so the
// daemon recognises an unchanged part after a restart.
func FormatSpec(r *rule.Rule, digest string) string {
	return fmt.Sprintf("%s%s pref %d digest %s%s", SpecPrefix, r.Name, r.Prio, digest, actionText(r.Actions))
}

// ParseSpec reads FormatSpec's text back into an opaque rule.
func ParseSpec(dev, text string) (*rule.Rule, error) {
	w := strings.Fields(strings.TrimPrefix(text, SpecPrefix))
	if !strings.HasPrefix(text, SpecPrefix) || len(w) < 5 || w[1] != "pref" || w[3] != "digest" {
		return nil, fmt.Errorf("nft rule spec %q: malformed", text)
	}
	prio, err := strconv.ParseUint(w[2], 10, 16)
	if err != nil {
		return nil, fmt.Errorf("nft rule spec %q: pref: %w", text, err)
	}
	acts, err := flower.ParseActions(w[5:])
	if err != nil {
		return nil, fmt.Errorf("nft rule spec %q: %w", text, err)
	}
	return &rule.Rule{Source: rule.SourceNFT, Dev: dev, Name: w[0], Prio: uint16(prio), Protocol: rule.EthPAll,
		Opaque: true, Actions: acts}, nil
}

// RuleName is the nft rule a part belongs to ("netdev/t/c/5").
func RuleName(part string) string {
	if i := strings.LastIndexByte(part, '#'); i >= 0 {
		return part[:i]
	}
	return part
}

// Sync makes the table's nft parts equal to want in one transaction
// (maps.Table.SyncSource).
func Sync(t *maps.Table, want []*rule.Rule) (added, removed int, err error) {
	return t.SyncSource(rule.SourceNFT, want)
}

// describe shows a part's first entry in flower's words.
func describe(m *rule.Match) []rule.KeyValue {
	var out []rule.KeyValue
	k, mk := m.Key, m.Mask
	add := func(name string, v any) { out = append(out, rule.KeyValue{Name: name, Value: v}) }
	hex16 := func(v, msk uint16) any {
		v, msk = rule.BE16ToHost(v), rule.BE16ToHost(msk)
		if msk == 0xffff {
			return fmt.Sprintf("0x%04x", v)
		}
		return fmt.Sprintf("0x%04x/0x%04x", v, msk)
	}
	mac := func(v, msk [6]byte) string {
		s := net.HardwareAddr(v[:]).String()
		if msk != [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} {
			s += "/" + net.HardwareAddr(msk[:]).String()
		}
		return s
	}
	ip := func(v, msk []byte) string {
		ones, bits := net.IPMask(msk).Size()
		if bits == 0 {
			return net.IP(v).String() + "/" + net.IP(msk).String()
		}
		if ones == bits {
			return net.IP(v).String()
		}
		return fmt.Sprintf("%s/%d", net.IP(v), ones)
	}
	if mk.EthDst != [6]byte{} {
		add("dst_mac", mac(k.EthDst, mk.EthDst))
	}
	if mk.EthSrc != [6]byte{} {
		add("src_mac", mac(k.EthSrc, mk.EthSrc))
	}
	names := [3]string{"eth_type", "vlan_ethtype", "cvlan_ethtype"}
	for i := range mk.EthType {
		if mk.EthType[i] != 0 {
			add(names[i], hex16(k.EthType[i], mk.EthType[i]))
		}
	}
	tci := [2]string{"vlan_tci", "cvlan_tci"}
	for i := range mk.VlanTci {
		if mk.VlanTci[i] != 0 {
			add(tci[i], hex16(k.VlanTci[i], mk.VlanTci[i]))
		}
	}
	u8 := func(name string, v, msk uint8) {
		if msk == 0xff {
			add(name, uint64(v))
		} else if msk != 0 {
			add(name, fmt.Sprintf("0x%02x/0x%02x", v, msk))
		}
	}
	u8("ip_proto", k.IpProto, mk.IpProto)
	u8("ip_tos", k.IpTos, mk.IpTos)
	u8("ip_ttl", k.IpTtl, mk.IpTtl)
	u8("ip_frag", k.IpFrag, mk.IpFrag)
	if mk.TcpFlags != 0 {
		add("tcp_flags", hex16(k.TcpFlags, mk.TcpFlags))
	}
	v4 := mk.EthType[0] != 0 && rule.BE16ToHost(k.EthType[0]) == rule.EthPIP ||
		mk.EthType[1] != 0 && rule.BE16ToHost(k.EthType[1]) == rule.EthPIP
	width := 16
	if v4 {
		width = 4
	}
	if mk.SrcIp != [16]byte{} {
		add("src_ip", ip(k.SrcIp[:width], mk.SrcIp[:width]))
	}
	if mk.DstIp != [16]byte{} {
		add("dst_ip", ip(k.DstIp[:width], mk.DstIp[:width]))
	}
	port := func(name string, v, msk uint16) {
		if msk == 0 {
			return
		}
		if msk == 0xffff {
			add(name, uint64(rule.BE16ToHost(v)))
			return
		}
		add(name, hex16(v, msk))
	}
	port("src_port", k.SrcPort, mk.SrcPort)
	port("dst_port", k.DstPort, mk.DstPort)
	u8("type", k.IcmpType, mk.IcmpType)
	u8("code", k.IcmpCode, mk.IcmpCode)
	return out
}
