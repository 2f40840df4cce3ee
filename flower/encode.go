package flower

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// Installing filters into the kernel's TC: the inverse of decode.go. A
// rule is encoded from its masked key (what ruletext.ParseFlower
// computed), not from its words, so what the kernel holds is what XDP
// runs; reading the filter back (DecodeFilter) gives the same rule.

// EncodeFilter builds the options of a flower filter (TCA_OPTIONS) for r:
// its keys, flags and actions. Actions must have their Ifindex resolved.
func EncodeFilter(r *rule.Rule) ([]byte, error) {
	e := &keyEncoder{ae: netlink.NewAttributeEncoder(), r: r, k: &r.Match.Key, mk: &r.Match.Mask}
	for _, kv := range r.Keys {
		if kv.Name == "indev" {
			e.ae.String(tcaFlowerIndev, fmt.Sprint(kv.Value))
		}
	}
	for _, step := range []func() error{e.ethernet, e.network, e.transport} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	var flags uint32
	if r.SkipHW {
		flags |= FlagSkipHW
	}
	if r.SkipSW {
		flags |= FlagSkipSW
	}
	e.ae.Uint32(tcaFlowerFlags, flags)
	acts, err := encodeActions(r.Actions)
	if err != nil {
		return nil, err
	}
	e.ae.Bytes(tcaFlowerAct|netlink.Nested, acts)
	return e.ae.Encode()
}

// keyEncoder writes a rule's masked key as flower key attributes.
type keyEncoder struct {
	ae    *netlink.AttributeEncoder
	r     *rule.Rule
	k, mk *rule.Key
	// l3 is the network protocol the L3/L4 keys belong to: the innermost
	// ethertype matched (ethernet sets it).
	l3  uint16
	arp bool
}

func be16(v uint16) []byte { b := make([]byte, 2); binary.BigEndian.PutUint16(b, v); return b }

// masked writes a key attribute and its mask attribute, unless the mask
// is all zero (the key is not matched).
func (e *keyEncoder) masked(val, mask uint16, v, msk []byte) {
	if !allZero(msk) {
		e.ae.Bytes(val, v)
		e.ae.Bytes(mask, msk)
	}
}

// ethernet writes the addresses, the ethertype and the VLAN tags.
func (e *keyEncoder) ethernet() error {
	k, mk, r := e.k, e.mk, e.r
	e.masked(tcaFlowerKeyEthDst, tcaFlowerKeyEthDstMask, k.EthDst[:], mk.EthDst[:])
	e.masked(tcaFlowerKeyEthSrc, tcaFlowerKeyEthSrcMask, k.EthSrc[:], mk.EthSrc[:])
	// The ethertype after the outermost tag is the filter's protocol
	// (tcmsg); iproute2 also sends it as the eth_type key.
	if r.Protocol != rule.EthPAll {
		e.ae.Bytes(tcaFlowerKeyEthType, be16(r.Protocol))
	}
	if err := e.vlan(0, tcaFlowerKeyVlanID, tcaFlowerKeyVlanPrio, tcaFlowerKeyVlanEthType); err != nil {
		return err
	}
	if err := e.vlan(1, tcaFlowerKeyCVlanID, tcaFlowerKeyCVlanPrio, tcaFlowerKeyCVlanEthType); err != nil {
		return err
	}
	e.l3 = r.Protocol
	for i := 2; i >= 0; i-- {
		if mk.EthType[i] != 0 {
			e.l3 = rule.BE16ToHost(k.EthType[i])
			break
		}
	}
	e.arp = e.l3 == rule.EthPARP || e.l3 == rule.EthPRARP
	return nil
}

// vlan writes tag i's id, priority and the ethertype after it.
func (e *keyEncoder) vlan(i int, idAttr, prioAttr, ethAttr uint16) error {
	k, mk := e.k, e.mk
	tci, tciMask := rule.BE16ToHost(k.VlanTci[i]), rule.BE16ToHost(mk.VlanTci[i])
	switch tciMask & 0x0fff {
	case 0:
	case 0x0fff:
		b := make([]byte, 2)
		binary.NativeEndian.PutUint16(b, tci&0x0fff)
		e.ae.Bytes(idAttr, b)
	default:
		return fmt.Errorf("vlan id mask 0x%03x: flower matches whole ids only", tciMask&0x0fff)
	}
	switch tciMask >> 13 {
	case 0:
	case 7:
		e.ae.Bytes(prioAttr, []byte{uint8(tci >> 13)})
	default:
		return fmt.Errorf("vlan priority mask %d: flower matches whole priorities only", tciMask>>13)
	}
	if mk.EthType[i+1] != 0 {
		e.ae.Bytes(ethAttr, be16(rule.BE16ToHost(k.EthType[i+1])))
	}
	return nil
}

// network writes IP's protocol, header bytes, fragment flags and
// addresses, or ARP's fields.
func (e *keyEncoder) network() error {
	k, mk := e.k, e.mk
	if mk.IpProto != 0 {
		if e.arp {
			e.masked(tcaFlowerKeyARPOp, tcaFlowerKeyARPOpMask, []byte{k.IpProto}, []byte{mk.IpProto})
		} else if mk.IpProto != 0xff {
			return errors.New("ip_proto with a mask: flower matches whole protocols only")
		} else {
			e.ae.Bytes(tcaFlowerKeyIPProto, []byte{k.IpProto})
		}
	}
	e.masked(tcaFlowerKeyIPTOS, tcaFlowerKeyIPTOSMask, []byte{k.IpTos}, []byte{mk.IpTos})
	e.masked(tcaFlowerKeyIPTTL, tcaFlowerKeyIPTTLMask, []byte{k.IpTtl}, []byte{mk.IpTtl})
	if mk.IpFrag != 0 {
		e.ae.Bytes(tcaFlowerKeyFlags, keyFlags(k.IpFrag))
		e.ae.Bytes(tcaFlowerKeyFlagsMask, keyFlags(mk.IpFrag))
	}
	switch {
	case e.l3 == rule.EthPIP:
		e.masked(tcaFlowerKeyIPv4Src, tcaFlowerKeyIPv4SrcMask, k.SrcIp[:4], mk.SrcIp[:4])
		e.masked(tcaFlowerKeyIPv4Dst, tcaFlowerKeyIPv4DstMask, k.DstIp[:4], mk.DstIp[:4])
	case e.l3 == rule.EthPIPv6:
		e.masked(tcaFlowerKeyIPv6Src, tcaFlowerKeyIPv6SrcMask, k.SrcIp[:], mk.SrcIp[:])
		e.masked(tcaFlowerKeyIPv6Dst, tcaFlowerKeyIPv6DstMask, k.DstIp[:], mk.DstIp[:])
	case e.arp:
		e.masked(tcaFlowerKeyARPSIP, tcaFlowerKeyARPSIPMask, k.SrcIp[:4], mk.SrcIp[:4])
		e.masked(tcaFlowerKeyARPTIP, tcaFlowerKeyARPTIPMask, k.DstIp[:4], mk.DstIp[:4])
		e.masked(tcaFlowerKeyARPSha, tcaFlowerKeyARPShaMask, k.ArpSha[:], mk.ArpSha[:])
		e.masked(tcaFlowerKeyARPTha, tcaFlowerKeyARPThaMask, k.ArpTha[:], mk.ArpTha[:])
	case !allZero(mk.SrcIp[:]) || !allZero(mk.DstIp[:]):
		return fmt.Errorf("address keys under protocol 0x%04x", e.l3)
	}
	return nil
}

// keyFlags is TCA_FLOWER_KEY_FLAGS for the key's fragment flags.
func keyFlags(f uint8) []byte {
	var v uint32
	if f&rule.FragIsFragment != 0 {
		v |= tcaFlowerKeyFlagsIsFrag
	}
	if f&rule.FragFirst != 0 {
		v |= tcaFlowerKeyFlagsFirst
	}
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

// transport writes the ports, port ranges, TCP flags and ICMP type and
// code.
func (e *keyEncoder) transport() error {
	m, k, mk := &e.r.Match, e.k, e.mk
	// Ports: per transport protocol; ranges have attributes of their own.
	var src, dst, srcMask, dstMask uint16 = 0, 0, 0, 0
	switch k.IpProto {
	case unix.IPPROTO_TCP:
		src, srcMask, dst, dstMask = tcaFlowerKeyTCPSrc, tcaFlowerKeyTCPSrcMask, tcaFlowerKeyTCPDst, tcaFlowerKeyTCPDstMask
	case unix.IPPROTO_UDP:
		src, srcMask, dst, dstMask = tcaFlowerKeyUDPSrc, tcaFlowerKeyUDPSrcMask, tcaFlowerKeyUDPDst, tcaFlowerKeyUDPDstMask
	case unix.IPPROTO_SCTP:
		src, srcMask, dst, dstMask = tcaFlowerKeySCTPSrc, tcaFlowerKeySCTPSrcMask, tcaFlowerKeySCTPDst, tcaFlowerKeySCTPDstMask
	}
	ports := mk.SrcPort != 0 || mk.DstPort != 0 || m.SrcPortRange.Set() || m.DstPortRange.Set()
	if ports && (e.arp || src == 0) {
		return errors.New("port keys need ip_proto tcp, udp or sctp")
	}
	if ports {
		e.masked(src, srcMask, be16(rule.BE16ToHost(k.SrcPort)), be16(rule.BE16ToHost(mk.SrcPort)))
		e.masked(dst, dstMask, be16(rule.BE16ToHost(k.DstPort)), be16(rule.BE16ToHost(mk.DstPort)))
		if r := m.SrcPortRange; r.Set() {
			e.ae.Bytes(tcaFlowerKeyPortSrcMin, be16(r.Min))
			e.ae.Bytes(tcaFlowerKeyPortSrcMax, be16(r.Max))
		}
		if r := m.DstPortRange; r.Set() {
			e.ae.Bytes(tcaFlowerKeyPortDstMin, be16(r.Min))
			e.ae.Bytes(tcaFlowerKeyPortDstMax, be16(r.Max))
		}
	}
	if mk.TcpFlags != 0 {
		e.masked(tcaFlowerKeyTCPFlags, tcaFlowerKeyTCPFlagsMask, be16(rule.BE16ToHost(k.TcpFlags)), be16(rule.BE16ToHost(mk.TcpFlags)))
	}
	if mk.IcmpType != 0 || mk.IcmpCode != 0 {
		typ, typMask, code, codeMask := uint16(tcaFlowerKeyICMPv4Type), uint16(tcaFlowerKeyICMPv4TypeMsk),
			uint16(tcaFlowerKeyICMPv4Code), uint16(tcaFlowerKeyICMPv4CodeMsk)
		if e.l3 == rule.EthPIPv6 {
			typ, typMask, code, codeMask = tcaFlowerKeyICMPv6Type, tcaFlowerKeyICMPv6TypeMsk,
				tcaFlowerKeyICMPv6Code, tcaFlowerKeyICMPv6CodeMsk
		}
		e.masked(typ, typMask, []byte{k.IcmpType}, []byte{mk.IcmpType})
		e.masked(code, codeMask, []byte{k.IcmpCode}, []byte{mk.IcmpCode})
	}
	return nil
}

// encodeActions builds TCA_FLOWER_ACT: each action nested under its order.
func encodeActions(actions []rule.Action) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	// tc_gen: index, capab, action (the control), refcnt, bindcnt.
	gen := func(control int32, extra int) []byte {
		b := make([]byte, 20+extra)
		binary.NativeEndian.PutUint32(b[8:], uint32(control))
		return b
	}
	for i, a := range actions {
		kind, opts := "", netlink.NewAttributeEncoder()
		switch a.Kind {
		case rule.ActDrop, rule.ActPass:
			kind = "gact"
			c := int32(tcActShot)
			if a.Kind == rule.ActPass {
				c = tcActOK
			}
			opts.Bytes(tcaGactParms, gen(c, 0))
		case rule.ActRedirect:
			if a.Ifindex <= 0 {
				return nil, fmt.Errorf("action mirred: device %q not resolved", a.Dev)
			}
			kind = "mirred"
			p := gen(tcActStolen, 8)
			binary.NativeEndian.PutUint32(p[20:], tcEgressRedir)
			binary.NativeEndian.PutUint32(p[24:], uint32(a.Ifindex))
			opts.Bytes(tcaMirredParms, p)
		case rule.ActVlanPop, rule.ActVlanPush, rule.ActVlanModify:
			kind = "vlan"
			p := gen(tcActPipe, 4)
			mode := map[rule.ActionKind]uint32{rule.ActVlanPop: tcVlanPop, rule.ActVlanPush: tcVlanPush,
				rule.ActVlanModify: tcVlanModify}[a.Kind]
			binary.NativeEndian.PutUint32(p[20:], mode)
			opts.Bytes(tcaVlanParms, p)
			if a.Kind != rule.ActVlanPop {
				b := make([]byte, 2)
				binary.NativeEndian.PutUint16(b, a.VlanID)
				opts.Bytes(tcaVlanID, b)
				proto := a.VlanProto
				if proto == 0 {
					proto = rule.EthP8021Q
				}
				b = make([]byte, 2)
				binary.BigEndian.PutUint16(b, proto)
				opts.Bytes(tcaVlanProto, b)
				if a.Kind == rule.ActVlanPush || a.HasPrio {
					opts.Bytes(tcaVlanPrio, []byte{a.VlanPrio})
				}
			}
		case rule.ActSetEthSrc, rule.ActSetEthDst:
			kind = "pedit"
			if err := encodePedit(a, opts); err != nil {
				return nil, err
			}
		default:
			return nil, ruletext.Unsupported("installing action %q in TC (xdpflow writes gact, mirred, vlan and pedit; "+
				"add the filter with skip_sw for XDP alone, or with tc)", ruletext.FormatAction(a))
		}
		ob, err := opts.Encode()
		if err != nil {
			return nil, err
		}
		one := netlink.NewAttributeEncoder()
		one.String(tcaActKind, kind)
		one.Bytes(tcaActOptions|netlink.Nested, ob)
		b, err := one.Encode()
		if err != nil {
			return nil, err
		}
		ae.Bytes(uint16(i+1)|netlink.Nested, b)
	}
	return ae.Encode()
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
