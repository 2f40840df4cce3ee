package flower

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/rule"
)

// Installing filters into the kernel's TC: the inverse of kernel.go. A
// rule is encoded from its masked key (what ParseFlower computed), not
// from its words, so what the kernel holds is what XDP runs; reading the
// filter back (DecodeFilter) gives the same rule.

const (
	tcVlanPop               = 1
	tcVlanPush              = 2
	tcVlanModify            = 3
	tcaFlowerKeyFlagsIsFrag = 1 << 0
	tcaFlowerKeyFlagsFirst  = 1 << 1
)

// EncodeFilter builds the options of a flower filter (TCA_OPTIONS) for r:
// its keys, flags and actions. Actions must have their Ifindex resolved.
func EncodeFilter(r *rule.Rule) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	m := &r.Match
	k, mk := &m.Key, &m.Mask
	be16 := func(v uint16) []byte { b := make([]byte, 2); binary.BigEndian.PutUint16(b, v); return b }
	u16 := func(v uint16) []byte { b := make([]byte, 2); binary.NativeEndian.PutUint16(b, v); return b }
	masked := func(val, mask uint16, v, msk []byte) {
		if !allZero(msk) {
			ae.Bytes(val, v)
			ae.Bytes(mask, msk)
		}
	}
	for _, kv := range r.Keys {
		if kv.Name == "indev" {
			ae.String(tcaFlowerIndev, fmt.Sprint(kv.Value))
		}
	}
	masked(tcaFlowerKeyEthDst, tcaFlowerKeyEthDstMask, k.EthDst[:], mk.EthDst[:])
	masked(tcaFlowerKeyEthSrc, tcaFlowerKeyEthSrcMask, k.EthSrc[:], mk.EthSrc[:])
	// The ethertype after the outermost tag is the filter's protocol
	// (tcmsg); iproute2 also sends it as the eth_type key.
	if r.Protocol != rule.EthPAll {
		ae.Bytes(tcaFlowerKeyEthType, be16(r.Protocol))
	}
	vlanKeys := func(i int, idAttr, prioAttr, ethAttr uint16) error {
		tci, tciMask := rule.BE16ToHost(k.VlanTci[i]), rule.BE16ToHost(mk.VlanTci[i])
		switch tciMask & 0x0fff {
		case 0:
		case 0x0fff:
			ae.Bytes(idAttr, u16(tci&0x0fff))
		default:
			return fmt.Errorf("vlan id mask 0x%03x: flower matches whole ids only", tciMask&0x0fff)
		}
		switch tciMask >> 13 {
		case 0:
		case 7:
			ae.Bytes(prioAttr, []byte{uint8(tci >> 13)})
		default:
			return fmt.Errorf("vlan priority mask %d: flower matches whole priorities only", tciMask>>13)
		}
		if mk.EthType[i+1] != 0 {
			ae.Bytes(ethAttr, be16(rule.BE16ToHost(k.EthType[i+1])))
		}
		return nil
	}
	if err := vlanKeys(0, tcaFlowerKeyVlanID, tcaFlowerKeyVlanPrio, tcaFlowerKeyVlanEthType); err != nil {
		return nil, err
	}
	if err := vlanKeys(1, tcaFlowerKeyCVlanID, tcaFlowerKeyCVlanPrio, tcaFlowerKeyCVlanEthType); err != nil {
		return nil, err
	}
	// The network protocol the L3/L4 keys belong to: the innermost
	// ethertype matched.
	l3 := r.Protocol
	for i := 2; i >= 0; i-- {
		if mk.EthType[i] != 0 {
			l3 = rule.BE16ToHost(k.EthType[i])
			break
		}
	}
	arp := l3 == rule.EthPARP || l3 == rule.EthPRARP
	if mk.IpProto != 0 {
		if arp {
			masked(tcaFlowerKeyARPOp, tcaFlowerKeyARPOpMask, []byte{k.IpProto}, []byte{mk.IpProto})
		} else if mk.IpProto != 0xff {
			return nil, errors.New("ip_proto with a mask: flower matches whole protocols only")
		} else {
			ae.Bytes(tcaFlowerKeyIPProto, []byte{k.IpProto})
		}
	}
	masked(tcaFlowerKeyIPTOS, tcaFlowerKeyIPTOSMask, []byte{k.IpTos}, []byte{mk.IpTos})
	masked(tcaFlowerKeyIPTTL, tcaFlowerKeyIPTTLMask, []byte{k.IpTtl}, []byte{mk.IpTtl})
	if mk.IpFrag != 0 {
		flags := func(f uint8) []byte {
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
		ae.Bytes(tcaFlowerKeyFlags, flags(k.IpFrag))
		ae.Bytes(tcaFlowerKeyFlagsMask, flags(mk.IpFrag))
	}
	switch {
	case l3 == rule.EthPIP:
		masked(tcaFlowerKeyIPv4Src, tcaFlowerKeyIPv4SrcMask, k.SrcIp[:4], mk.SrcIp[:4])
		masked(tcaFlowerKeyIPv4Dst, tcaFlowerKeyIPv4DstMask, k.DstIp[:4], mk.DstIp[:4])
	case l3 == rule.EthPIPv6:
		masked(tcaFlowerKeyIPv6Src, tcaFlowerKeyIPv6SrcMask, k.SrcIp[:], mk.SrcIp[:])
		masked(tcaFlowerKeyIPv6Dst, tcaFlowerKeyIPv6DstMask, k.DstIp[:], mk.DstIp[:])
	case arp:
		masked(tcaFlowerKeyARPSIP, tcaFlowerKeyARPSIPMask, k.SrcIp[:4], mk.SrcIp[:4])
		masked(tcaFlowerKeyARPTIP, tcaFlowerKeyARPTIPMask, k.DstIp[:4], mk.DstIp[:4])
		masked(tcaFlowerKeyARPSha, tcaFlowerKeyARPShaMask, k.ArpSha[:], mk.ArpSha[:])
		masked(tcaFlowerKeyARPTha, tcaFlowerKeyARPThaMask, k.ArpTha[:], mk.ArpTha[:])
	case !allZero(mk.SrcIp[:]) || !allZero(mk.DstIp[:]):
		return nil, fmt.Errorf("address keys under protocol 0x%04x", l3)
	}
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
	if ports && (arp || src == 0) {
		return nil, errors.New("port keys need ip_proto tcp, udp or sctp")
	}
	if ports {
		masked(src, srcMask, be16(rule.BE16ToHost(k.SrcPort)), be16(rule.BE16ToHost(mk.SrcPort)))
		masked(dst, dstMask, be16(rule.BE16ToHost(k.DstPort)), be16(rule.BE16ToHost(mk.DstPort)))
		if r := m.SrcPortRange; r.Set() {
			ae.Bytes(tcaFlowerKeyPortSrcMin, be16(r.Min))
			ae.Bytes(tcaFlowerKeyPortSrcMax, be16(r.Max))
		}
		if r := m.DstPortRange; r.Set() {
			ae.Bytes(tcaFlowerKeyPortDstMin, be16(r.Min))
			ae.Bytes(tcaFlowerKeyPortDstMax, be16(r.Max))
		}
	}
	if mk.TcpFlags != 0 {
		masked(tcaFlowerKeyTCPFlags, tcaFlowerKeyTCPFlagsMask, be16(rule.BE16ToHost(k.TcpFlags)), be16(rule.BE16ToHost(mk.TcpFlags)))
	}
	if mk.IcmpType != 0 || mk.IcmpCode != 0 {
		typ, typMask, code, codeMask := uint16(tcaFlowerKeyICMPv4Type), uint16(tcaFlowerKeyICMPv4TypeMsk),
			uint16(tcaFlowerKeyICMPv4Code), uint16(tcaFlowerKeyICMPv4CodeMsk)
		if l3 == rule.EthPIPv6 {
			typ, typMask, code, codeMask = tcaFlowerKeyICMPv6Type, tcaFlowerKeyICMPv6TypeMsk,
				tcaFlowerKeyICMPv6Code, tcaFlowerKeyICMPv6CodeMsk
		}
		masked(typ, typMask, []byte{k.IcmpType}, []byte{mk.IcmpType})
		masked(code, codeMask, []byte{k.IcmpCode}, []byte{mk.IcmpCode})
	}
	var flags uint32
	if r.SkipHW {
		flags |= FlagSkipHW
	}
	if r.SkipSW {
		flags |= FlagSkipSW
	}
	ae.Uint32(tcaFlowerFlags, flags)
	acts, err := encodeActions(r.Actions)
	if err != nil {
		return nil, err
	}
	ae.Bytes(tcaFlowerAct|netlink.Nested, acts)
	return ae.Encode()
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
			return nil, unsupported("installing action %q in TC (xdpflow writes gact, mirred, vlan and pedit; "+
				"add the filter with skip_sw for XDP alone, or with tc)", FormatAction(a))
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

// Writer adds and deletes ingress filters over rtnetlink.
type Writer struct {
	c *netlink.Conn
}

// NewWriter opens an rtnetlink socket in the current network namespace.
func NewWriter() (*Writer, error) {
	c, err := dialRoute()
	if err != nil {
		return nil, err
	}
	return &Writer{c: c}, nil
}

// Close closes the socket.
func (w *Writer) Close() error { return w.c.Close() }

// Verb says how a filter add treats an existing filter, as tc's verbs do.
type Verb int

const (
	VerbAdd     Verb = iota // fail if it exists
	VerbReplace             // create or replace
	VerbChange              // replace; fail if it does not exist
)

// EnsureIngress adds a clsact qdisc to ifindex unless it has clsact or
// the ingress qdisc already (tc would make the user add one first), and
// says whether it did.
func (w *Writer) EnsureIngress(ifindex int) (created bool, err error) {
	err = w.qdisc(unix.RTM_NEWQDISC, ifindex, netlink.Create|netlink.Excl)
	if errors.Is(err, unix.EEXIST) {
		// clsact, or an ingress qdisc, is there already.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tc: add clsact to ifindex %d: %w", ifindex, err)
	}
	return true, nil
}

// DeleteIngress removes the clsact qdisc EnsureIngress added.
func (w *Writer) DeleteIngress(ifindex int) error {
	return w.qdisc(unix.RTM_DELQDISC, ifindex, 0)
}

func (w *Writer) qdisc(typ netlink.HeaderType, ifindex int, flags netlink.HeaderFlags) error {
	hdr := TCMsg{Ifindex: int32(ifindex), Handle: 0xFFFF0000, Parent: 0xFFFFFFF1 /* TC_H_CLSACT */}.Marshal()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.TCA_KIND, "clsact")
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append(hdr, attrs...),
	})
	return err
}

// HasFlower says whether the kernel has cls_flower, asking with a filter
// it must refuse either way: an option flower's policy rejects (EINVAL,
// ERANGE) or an unknown classifier (ENOENT). Nothing is installed. The
// device needs an ingress qdisc (EnsureIngress).
func (w *Writer) HasFlower(ifindex int) (bool, error) {
	hdr := TCMsg{Ifindex: int32(ifindex), Parent: IngressParent,
		Info: uint32(0xFFFF)<<16 | uint32(rule.HostToBE16(rule.EthPAll))}.Marshal()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.TCA_KIND, "flower")
	// A MAC address one byte long.
	ae.Bytes(unix.TCA_OPTIONS|netlink.Nested, []byte{5, 0, tcaFlowerKeyEthDst, 0, 0xff, 0, 0, 0})
	attrs, err := ae.Encode()
	if err != nil {
		return false, err
	}
	_, err = w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWTFILTER, Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
		Data:   append(hdr, attrs...),
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err == nil:
		// Accepted after all: take it out again.
		_ = w.Delete(ifindex, 0, 0xFFFF, rule.EthPAll, 0, "")
		return true, nil
	}
	return true, nil
}

// Add installs r on ifindex's ingress (chain r.Chain, pref r.Prio,
// handle r.Handle; 0: the kernel picks) and returns the handle the kernel
// gave it.
func (w *Writer) Add(ifindex int, r *rule.Rule, verb Verb) (uint32, error) {
	data, err := FilterMessage(ifindex, r)
	if err != nil {
		return 0, err
	}
	flags := netlink.Request | netlink.Acknowledge | netlink.Echo
	switch verb {
	case VerbAdd:
		flags |= netlink.Create | netlink.Excl
	case VerbReplace:
		flags |= netlink.Create | netlink.Replace
	case VerbChange:
		flags |= netlink.Replace
	}
	msgs, err := w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWTFILTER, Flags: flags},
		Data:   data,
	})
	if err != nil {
		return 0, fmt.Errorf("tc: add filter pref %d: %w", r.Prio, err)
	}
	// The echo and the acknowledgement are two datagrams, and Execute
	// reads one: read up to the acknowledgement, or it would answer the
	// socket's next request (a batch's next filter).
	isAck := func(m netlink.Message) bool { return m.Header.Type == netlink.Error }
	for acked := slices.ContainsFunc(msgs, isAck); !acked; {
		more, err := w.c.Receive()
		if err != nil {
			return 0, fmt.Errorf("tc: add filter pref %d: %w", r.Prio, err)
		}
		acked = slices.ContainsFunc(more, isAck)
		msgs = append(msgs, more...)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWTFILTER {
			if h, _, err := ParseTCMsg(m.Data); err == nil && h.Handle != 0 {
				return h.Handle, nil
			}
		}
	}
	return r.Handle, nil
}

// FilterMessage is the RTM_NEWTFILTER body (tcmsg and attributes) of r
// as an ingress flower filter of ifindex: a request, or what a
// notification of the filter carries (benchmarks feed the daemon those).
func FilterMessage(ifindex int, r *rule.Rule) ([]byte, error) {
	opts, err := EncodeFilter(r)
	if err != nil {
		return nil, err
	}
	hdr := TCMsg{Ifindex: int32(ifindex), Handle: r.Handle, Parent: IngressParent,
		Info: uint32(r.Prio)<<16 | uint32(rule.HostToBE16(r.Protocol))}.Marshal()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.TCA_KIND, "flower")
	if r.Chain != 0 {
		ae.Uint32(unix.TCA_CHAIN, r.Chain)
	}
	ae.Bytes(unix.TCA_OPTIONS|netlink.Nested, opts)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(hdr, attrs...), nil
}

// Delete removes the ingress filters of pref on ifindex: all of them, or
// the one with handle (of that protocol and classifier kind) when handle
// is not 0.
func (w *Writer) Delete(ifindex int, chain uint32, prio uint16, protocol uint16, handle uint32, kind string) error {
	info := uint32(prio) << 16
	if handle != 0 {
		info |= uint32(rule.HostToBE16(protocol))
	}
	hdr := TCMsg{Ifindex: int32(ifindex), Handle: handle, Parent: IngressParent, Info: info}.Marshal()
	ae := netlink.NewAttributeEncoder()
	if handle != 0 {
		ae.String(unix.TCA_KIND, kind)
	}
	if chain != 0 {
		ae.Uint32(unix.TCA_CHAIN, chain)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_DELTFILTER, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, attrs...),
	})
	if err != nil {
		return fmt.Errorf("tc: delete filter pref %d: %w", prio, err)
	}
	return nil
}
