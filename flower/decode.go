package flower

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/mdlayher/netlink"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// flowerDecoder collects a flower filter's options as tc words.
type flowerDecoder struct {
	ifname  func(int) (string, error)
	raw     map[uint16][]byte
	words   []string
	actions []string
	// redirectIfindex: the ifindex of each redirect, by its place in the
	// parsed action list.
	redirectIfindex map[int]int
	flags           uint32
	ethType         uint16
	innerEthType    uint16 // vlan_ethtype, or cvlan_ethtype when given
	packets, bytes  uint64
	unknown         error // a key xdpflow cannot run
	actionErr       error // an action xdpflow cannot run
}

func (d *flowerDecoder) decode(b []byte) error {
	d.raw = map[uint16][]byte{}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	var acts []byte
	for ad.Next() {
		t := ad.Type()
		switch t {
		case tcaFlowerAct:
			acts = ad.Bytes()
		case tcaFlowerFlags:
			d.flags = ad.Uint32()
		case tcaFlowerInHWCount:
		default:
			d.raw[t] = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return err
	}
	d.keys()
	if acts != nil {
		if err := d.decodeActions(acts); err != nil {
			return err
		}
	}
	return nil
}

// take returns an attribute's value and forgets it, so what is left at
// the end is what was not understood.
func (d *flowerDecoder) take(t uint16) []byte {
	v, ok := d.raw[t]
	if !ok {
		return nil
	}
	delete(d.raw, t)
	return v
}

func (d *flowerDecoder) add(words ...string) { d.words = append(d.words, words...) }

// maskedKey is a key attribute and its mask attribute.
type maskedKey struct {
	name      string
	val, mask uint16
}

// addMasked adds each key present, rendered with its mask.
func (d *flowerDecoder) addMasked(render func(v, m []byte) string, keys ...maskedKey) {
	for _, k := range keys {
		if v := d.take(k.val); v != nil {
			d.add(k.name, render(v, d.take(k.mask)))
		}
	}
}

// maskedInt renders a value and its mask (both big-endian bytes, mask
// optional) as tc's "v" or "0xv/0xmask".
func maskedInt(v, m []byte) string {
	if m == nil {
		m = bytes.Repeat([]byte{0xff}, len(v))
	}
	full := uint64(1)<<(8*len(m)) - 1
	return fmt.Sprint(ruletext.MaskedNumber(beUint(v), beUint(m), full, 0))
}

func beUint(b []byte) uint64 {
	var x uint64
	for _, c := range b {
		x = x<<8 | uint64(c)
	}
	return x
}

// keys turns the match attributes into flower words, each after the keys
// the parser wants before it (ip_proto before the ports), and names what
// is left over.
func (d *flowerDecoder) keys() {
	d.ethernetKeys()
	d.networkKeys()
	d.transportKeys()
	for t := range d.raw {
		name, ok := flowerKeyNames[t]
		if !ok {
			name = fmt.Sprintf("attribute %d", t)
		}
		d.unknownKey(fmt.Sprintf("flower key %s", name))
	}
}

// ethernetKeys: the ethertype, the input device, the addresses and the
// VLAN tags.
func (d *flowerDecoder) ethernetKeys() {
	if v := d.take(tcaFlowerKeyEthType); len(v) == 2 {
		d.ethType = binary.BigEndian.Uint16(v)
	}
	if v := d.take(tcaFlowerIndev); v != nil {
		d.add("indev", strings.TrimRight(string(v), "\x00"))
	}
	d.addMasked(ruletext.MaskedMAC,
		maskedKey{"dst_mac", tcaFlowerKeyEthDst, tcaFlowerKeyEthDstMask},
		maskedKey{"src_mac", tcaFlowerKeyEthSrc, tcaFlowerKeyEthSrcMask},
	)
	// VLAN keys come before vlan_ethtype in the parser's eyes, and the
	// outer tag's before the inner (cvlan_) tag's.
	for _, tag := range []struct {
		prefix            string
		id, prio, ethType uint16
	}{
		{"vlan_", tcaFlowerKeyVlanID, tcaFlowerKeyVlanPrio, tcaFlowerKeyVlanEthType},
		{"cvlan_", tcaFlowerKeyCVlanID, tcaFlowerKeyCVlanPrio, tcaFlowerKeyCVlanEthType},
	} {
		if v := d.take(tag.id); len(v) == 2 {
			d.add(tag.prefix+"id", strconv.Itoa(int(binary.NativeEndian.Uint16(v))))
		}
		if v := d.take(tag.prio); len(v) == 1 {
			d.add(tag.prefix+"prio", strconv.Itoa(int(v[0])))
		}
		if v := d.take(tag.ethType); len(v) == 2 {
			d.innerEthType = binary.BigEndian.Uint16(v)
			d.add(tag.prefix+"ethtype", fmt.Sprintf("0x%04x", d.innerEthType))
		}
	}
}

// networkKeys: IP's protocol, header bytes, fragment flags and
// addresses, and ARP's fields.
func (d *flowerDecoder) networkKeys() {
	if v := d.take(tcaFlowerKeyIPProto); len(v) == 1 {
		d.add("ip_proto", fmt.Sprintf("0x%02x", v[0]))
	}
	d.addMasked(maskedInt,
		maskedKey{"ip_tos", tcaFlowerKeyIPTOS, tcaFlowerKeyIPTOSMask},
		maskedKey{"ip_ttl", tcaFlowerKeyIPTTL, tcaFlowerKeyIPTTLMask},
	)
	if v := d.take(tcaFlowerKeyFlags); len(v) == 4 {
		val := binary.BigEndian.Uint32(v)
		mask := uint32(0xffffffff)
		if m := d.take(tcaFlowerKeyFlagsMask); len(m) == 4 {
			mask = binary.BigEndian.Uint32(m)
		}
		const known = rule.FragIsFragment | rule.FragFirst
		if mask&^known != 0 {
			d.unknownKey(fmt.Sprintf("flower key flags 0x%x", mask&^known))
		}
		if mask&known != 0 {
			d.add("ip_flags", ruletext.FormatIPFlags(uint8(val&known), uint8(mask&known)))
		}
	}
	d.addMasked(ruletext.MaskedIP,
		maskedKey{"src_ip", tcaFlowerKeyIPv4Src, tcaFlowerKeyIPv4SrcMask},
		maskedKey{"dst_ip", tcaFlowerKeyIPv4Dst, tcaFlowerKeyIPv4DstMask},
		maskedKey{"src_ip", tcaFlowerKeyIPv6Src, tcaFlowerKeyIPv6SrcMask},
		maskedKey{"dst_ip", tcaFlowerKeyIPv6Dst, tcaFlowerKeyIPv6DstMask},
		maskedKey{"arp_sip", tcaFlowerKeyARPSIP, tcaFlowerKeyARPSIPMask},
		maskedKey{"arp_tip", tcaFlowerKeyARPTIP, tcaFlowerKeyARPTIPMask},
	)
	if v := d.take(tcaFlowerKeyARPOp); len(v) == 1 {
		if m := d.take(tcaFlowerKeyARPOpMask); m != nil && bytes.Count(m, []byte{0xff}) != len(m) {
			d.unknownKey("flower key arp_op with a mask")
		}
		d.add("arp_op", strconv.Itoa(int(v[0])))
	}
	d.addMasked(ruletext.MaskedMAC,
		maskedKey{"arp_sha", tcaFlowerKeyARPSha, tcaFlowerKeyARPShaMask},
		maskedKey{"arp_tha", tcaFlowerKeyARPTha, tcaFlowerKeyARPThaMask},
	)
}

// transportKeys: ports and port ranges, TCP flags, ICMP type and code.
func (d *flowerDecoder) transportKeys() {
	// Ports: the kernel keeps TCP, UDP and SCTP ports apart; which one a
	// filter has follows from its ip_proto.
	d.addMasked(maskedInt,
		maskedKey{"src_port", tcaFlowerKeyTCPSrc, tcaFlowerKeyTCPSrcMask},
		maskedKey{"dst_port", tcaFlowerKeyTCPDst, tcaFlowerKeyTCPDstMask},
		maskedKey{"src_port", tcaFlowerKeyUDPSrc, tcaFlowerKeyUDPSrcMask},
		maskedKey{"dst_port", tcaFlowerKeyUDPDst, tcaFlowerKeyUDPDstMask},
		maskedKey{"src_port", tcaFlowerKeySCTPSrc, tcaFlowerKeySCTPSrcMask},
		maskedKey{"dst_port", tcaFlowerKeySCTPDst, tcaFlowerKeySCTPDstMask},
	)
	for _, k := range []struct {
		name   string
		lo, hi uint16
	}{
		{"src_port", tcaFlowerKeyPortSrcMin, tcaFlowerKeyPortSrcMax},
		{"dst_port", tcaFlowerKeyPortDstMin, tcaFlowerKeyPortDstMax},
	} {
		lo, hi := d.take(k.lo), d.take(k.hi)
		if len(lo) == 2 && len(hi) == 2 {
			d.add(k.name, fmt.Sprintf("%d-%d", binary.BigEndian.Uint16(lo), binary.BigEndian.Uint16(hi)))
		}
	}
	if v := d.take(tcaFlowerKeyTCPFlags); len(v) == 2 {
		// The flow dissector keeps the low 12 bits of the flag word: mask
		// bits above them compare against zero.
		val, mask := binary.BigEndian.Uint16(v), uint16(0xffff)
		if m := d.take(tcaFlowerKeyTCPFlagsMask); len(m) == 2 {
			mask = binary.BigEndian.Uint16(m)
		}
		if val&mask&0xF000 != 0 {
			d.unknownKey("flower key tcp_flags above 0x0fff (matches no packet)")
		}
		d.add("tcp_flags", ruletext.MaskedHex(uint64(val&mask&0x0FFF), uint64(mask&0x0FFF), 0x0FFF, 0))
	}
	// ICMP type and code: the kernel keeps v4 and v6 apart too.
	d.addMasked(maskedInt,
		maskedKey{"type", tcaFlowerKeyICMPv4Type, tcaFlowerKeyICMPv4TypeMsk},
		maskedKey{"type", tcaFlowerKeyICMPv6Type, tcaFlowerKeyICMPv6TypeMsk},
		maskedKey{"code", tcaFlowerKeyICMPv4Code, tcaFlowerKeyICMPv4CodeMsk},
		maskedKey{"code", tcaFlowerKeyICMPv6Code, tcaFlowerKeyICMPv6CodeMsk},
	)
}

func (d *flowerDecoder) unknownKey(what string) {
	if d.unknown == nil {
		d.unknown = ruletext.Unsupported("%s", what)
	}
}
