package flower

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/rule"
)

// The kernel's TC filters, read over rtnetlink. A kernel filter is turned
// into flower's own words and parsed by ParseFlower, so a mirrored filter
// means exactly what the same `xdpflow filter add` means; every attribute
// is accounted for, and one this package does not know makes the filter
// not offloadable (never a wider or narrower match). The attribute numbers
// are the kernel's uapi (include/uapi/linux/pkt_cls.h, tc_act/*.h).

// TCMsgLen is the size of struct tcmsg.
const TCMsgLen = 20

// IngressParent is TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS): the parent of
// ingress filters, under clsact or the ingress qdisc.
const IngressParent = 0xFFFFFFF2

// TCMsg is struct tcmsg.
type TCMsg struct {
	Ifindex int32
	Handle  uint32
	Parent  uint32
	Info    uint32 // filters: prio<<16 | protocol (network order)
}

// ParseTCMsg reads the header of an rtnetlink TC message.
func ParseTCMsg(b []byte) (TCMsg, []byte, error) {
	if len(b) < TCMsgLen {
		return TCMsg{}, nil, errors.New("tc message too short")
	}
	ne := binary.NativeEndian
	return TCMsg{Ifindex: int32(ne.Uint32(b[4:])), Handle: ne.Uint32(b[8:]), Parent: ne.Uint32(b[12:]),
		Info: ne.Uint32(b[16:])}, b[TCMsgLen:], nil
}

// Marshal encodes the header.
func (m TCMsg) Marshal() []byte {
	b := make([]byte, TCMsgLen)
	ne := binary.NativeEndian
	b[0] = unix.AF_UNSPEC
	ne.PutUint32(b[4:], uint32(m.Ifindex))
	ne.PutUint32(b[8:], m.Handle)
	ne.PutUint32(b[12:], m.Parent)
	ne.PutUint32(b[16:], m.Info)
	return b
}

// Filter flags (TCA_CLS_FLAGS_*).
const (
	FlagSkipHW  = 1 << 0
	FlagSkipSW  = 1 << 1
	FlagInHW    = 1 << 2
	FlagNotInHW = 1 << 3
)

// KernelFilter is one filter of a device's ingress as the kernel holds it.
type KernelFilter struct {
	Ifindex  int
	Chain    uint32
	Prio     uint16
	Protocol uint16 // host order
	Handle   uint32
	Kind     string // "flower", "u32", "bpf", ...
	Flags    uint32 // FlagSkipHW, ...
	// Rule is the filter in xdpflow's model (Source tc), nil when Err says
	// why it has none. Actions' Ifindex are resolved.
	Rule *rule.Rule
	// Err: the filter (or the part named) cannot be run in XDP.
	Err error
	// Punt is what of the match is known when Err is set: a rule matching
	// at least every packet the filter matches (keys xdpflow cannot read
	// left out), for the punt entry that keeps the filter's packets for TC.
	Punt *rule.Rule
	// Packets and Bytes are the kernel's counters (the first action's).
	Packets, Bytes uint64

	keepalive struct { // Rule with a keepalive (withKeepalive)
		d    time.Duration
		rule *rule.Rule
	}
}

// ID names the filter the way tc addresses it.
func (f *KernelFilter) ID() string {
	return fmt.Sprintf("chain %d pref %d handle 0x%x", f.Chain, f.Prio, f.Handle)
}

// DecodeFilter decodes an RTM_NEWTFILTER message (a dump entry or a
// notification). ifname resolves ifindexes to names (nil: net.InterfaceByIndex).
func DecodeFilter(b []byte, dev string, ifname func(int) (string, error)) (*KernelFilter, error) {
	hdr, attrs, err := ParseTCMsg(b)
	if err != nil {
		return nil, err
	}
	f := &KernelFilter{Ifindex: int(hdr.Ifindex), Handle: hdr.Handle, Prio: uint16(hdr.Info >> 16),
		Protocol: rule.BE16ToHost(uint16(hdr.Info))}
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return nil, err
	}
	var options []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.TCA_KIND:
			f.Kind = ad.String()
		case unix.TCA_OPTIONS:
			options = ad.Bytes()
		case unix.TCA_CHAIN:
			f.Chain = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("tc filter %s: %w", f.ID(), err)
	}
	if ifname == nil {
		ifname = func(i int) (string, error) {
			ifi, err := net.InterfaceByIndex(i)
			if err != nil {
				return "", err
			}
			return ifi.Name, nil
		}
	}
	f.translate(dev, options, ifname)
	return f, nil
}

// translate fills Rule, or Err and Punt.
func (f *KernelFilter) translate(dev string, options []byte, ifname func(int) (string, error)) {
	// A filter of protocol all whose flower key names an ethertype matches
	// that protocol only: model it as that protocol (the key is not a word).
	proto := f.Protocol
	base := func() *rule.Rule {
		return &rule.Rule{Source: rule.SourceTC, Dev: dev, Chain: f.Chain, Prio: f.Prio, Handle: f.Handle,
			Protocol: proto}
	}
	punt := func(err error, known []string) {
		f.Err = err
		r := base()
		r.Handle = PuntHandle
		if perr := ParseFlower(known, r); perr != nil {
			// Even the known part does not parse: the punt covers the
			// filter's whole pref and protocol.
			r = base()
			r.Handle = PuntHandle
		}
		r.Actions = []rule.Action{{Kind: rule.ActPass}}
		r.Text = Format(r)
		f.Punt = r
	}
	if f.Kind != "flower" {
		punt(unsupported("classifier %q", f.Kind), nil)
		// The punt covers the pref: one for all of the classifier's entries.
		f.Punt.Handle = 0
		f.Punt.Text = Format(f.Punt)
		return
	}
	d := flowerDecoder{ifname: ifname}
	if err := d.decode(options); err != nil {
		punt(fmt.Errorf("decode: %w", err), nil)
		return
	}
	f.Flags = d.flags
	f.Packets, f.Bytes = d.packets, d.bytes
	// The kernel keeps the innermost ethertype as the key's eth_type:
	// the protocol, or the vlan_ethtype/cvlan_ethtype under VLAN tags.
	switch {
	case d.ethType == 0 || d.ethType == proto || d.ethType == d.innerEthType:
	case proto == rule.EthPAll:
		proto = d.ethType
	default:
		punt(unsupported("flower eth_type 0x%04x differs from the filter's protocol", d.ethType), nil)
		return
	}
	if d.unknown != nil {
		punt(d.unknown, d.words)
		return
	}
	r := base()
	if err := ParseFlower(append(append([]string(nil), d.words...), d.actions...), r); err != nil {
		punt(err, d.words)
		return
	}
	if d.actionErr != nil {
		punt(d.actionErr, d.words)
		return
	}
	r.SkipHW, r.SkipSW = f.Flags&FlagSkipHW != 0, f.Flags&FlagSkipSW != 0
	for i := range r.Actions {
		if a := &r.Actions[i]; a.Kind == rule.ActRedirect {
			a.Ifindex = d.redirectIfindex[i]
		}
	}
	r.Text = Format(r)
	f.Rule = r
}

// The TCA_FLOWER_* attributes.
const (
	tcaFlowerClassID          = 1
	tcaFlowerIndev            = 2
	tcaFlowerAct              = 3
	tcaFlowerKeyEthDst        = 4
	tcaFlowerKeyEthDstMask    = 5
	tcaFlowerKeyEthSrc        = 6
	tcaFlowerKeyEthSrcMask    = 7
	tcaFlowerKeyEthType       = 8
	tcaFlowerKeyIPProto       = 9
	tcaFlowerKeyIPv4Src       = 10
	tcaFlowerKeyIPv4SrcMask   = 11
	tcaFlowerKeyIPv4Dst       = 12
	tcaFlowerKeyIPv4DstMask   = 13
	tcaFlowerKeyIPv6Src       = 14
	tcaFlowerKeyIPv6SrcMask   = 15
	tcaFlowerKeyIPv6Dst       = 16
	tcaFlowerKeyIPv6DstMask   = 17
	tcaFlowerKeyTCPSrc        = 18
	tcaFlowerKeyTCPDst        = 19
	tcaFlowerKeyUDPSrc        = 20
	tcaFlowerKeyUDPDst        = 21
	tcaFlowerFlags            = 22
	tcaFlowerKeyVlanID        = 23
	tcaFlowerKeyVlanPrio      = 24
	tcaFlowerKeyVlanEthType   = 25
	tcaFlowerKeyTCPSrcMask    = 35
	tcaFlowerKeyTCPDstMask    = 36
	tcaFlowerKeyUDPSrcMask    = 37
	tcaFlowerKeyUDPDstMask    = 38
	tcaFlowerKeySCTPSrcMask   = 39
	tcaFlowerKeySCTPDstMask   = 40
	tcaFlowerKeySCTPSrc       = 41
	tcaFlowerKeySCTPDst       = 42
	tcaFlowerKeyFlags         = 47
	tcaFlowerKeyFlagsMask     = 48
	tcaFlowerKeyICMPv4Code    = 49
	tcaFlowerKeyICMPv4CodeMsk = 50
	tcaFlowerKeyICMPv4Type    = 51
	tcaFlowerKeyICMPv4TypeMsk = 52
	tcaFlowerKeyICMPv6Code    = 53
	tcaFlowerKeyICMPv6CodeMsk = 54
	tcaFlowerKeyICMPv6Type    = 55
	tcaFlowerKeyICMPv6TypeMsk = 56
	tcaFlowerKeyARPSIP        = 57
	tcaFlowerKeyARPSIPMask    = 58
	tcaFlowerKeyARPTIP        = 59
	tcaFlowerKeyARPTIPMask    = 60
	tcaFlowerKeyARPOp         = 61
	tcaFlowerKeyARPOpMask     = 62
	tcaFlowerKeyARPSha        = 63
	tcaFlowerKeyARPShaMask    = 64
	tcaFlowerKeyARPTha        = 65
	tcaFlowerKeyARPThaMask    = 66
	tcaFlowerKeyTCPFlags      = 71
	tcaFlowerKeyTCPFlagsMask  = 72
	tcaFlowerKeyIPTOS         = 73
	tcaFlowerKeyIPTOSMask     = 74
	tcaFlowerKeyIPTTL         = 75
	tcaFlowerKeyIPTTLMask     = 76
	tcaFlowerKeyCVlanID       = 77
	tcaFlowerKeyCVlanPrio     = 78
	tcaFlowerKeyCVlanEthType  = 79
	tcaFlowerInHWCount        = 86
	tcaFlowerKeyPortSrcMin    = 87
	tcaFlowerKeyPortSrcMax    = 88
	tcaFlowerKeyPortDstMin    = 89
	tcaFlowerKeyPortDstMax    = 90
)

// flowerKeyNames names the keys xdpflow does not run, for the reason shown.
var flowerKeyNames = map[uint16]string{
	1: "classid", 26: "enc_key_id", 27: "enc_src_ip", 28: "enc_src_ip", 29: "enc_dst_ip", 30: "enc_dst_ip",
	31: "enc_src_ip", 32: "enc_src_ip", 33: "enc_dst_ip", 34: "enc_dst_ip", 43: "enc_src_port",
	44: "enc_src_port", 45: "enc_dst_port", 46: "enc_dst_port", 67: "mpls_ttl", 68: "mpls_bos", 69: "mpls_tc",
	70: "mpls_label", 80: "enc_tos", 81: "enc_tos", 82: "enc_ttl", 83: "enc_ttl", 84: "enc_opts", 85: "enc_opts",
	91: "ct_state", 92: "ct_state", 93: "ct_zone", 94: "ct_zone", 95: "ct_mark", 96: "ct_mark", 97: "ct_label",
	98: "ct_label", 99: "mpls", 100: "hash", 101: "hash", 102: "num_of_vlans", 103: "pppoe_sid",
	104: "ppp_proto", 105: "l2tpv3_sid", 106: "l2_miss", 107: "cfm", 108: "spi", 109: "spi",
	110: "enc_flags", 111: "enc_flags",
}

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

func allOnes(b []byte) bool {
	for _, x := range b {
		if x != 0xff {
			return false
		}
	}
	return true
}

// maskedInt renders a value and its mask (both big-endian bytes, mask
// optional) as tc's "v" or "v/mask".
func maskedInt(v, m []byte) string {
	be := func(b []byte) uint64 {
		var x uint64
		for _, c := range b {
			x = x<<8 | uint64(c)
		}
		return x
	}
	if m == nil || allOnes(m) {
		return strconv.FormatUint(be(v), 10)
	}
	return fmt.Sprintf("0x%x/0x%x", be(v), be(m))
}

func maskedMAC(v, m []byte) string {
	if m == nil || allOnes(m) {
		return net.HardwareAddr(v).String()
	}
	return net.HardwareAddr(v).String() + "/" + net.HardwareAddr(m).String()
}

func maskedIP(v, m []byte) string {
	ip := net.IP(v)
	if m == nil {
		return ip.String()
	}
	if ones, bits := net.IPMask(m).Size(); bits != 0 {
		return fmt.Sprintf("%s/%d", ip, ones)
	}
	return ip.String() + "/" + net.IP(m).String() // not a prefix: parsePrefix takes a mask address
}

// keys turns the match attributes into flower words.
func (d *flowerDecoder) keys() {
	if v := d.take(tcaFlowerKeyEthType); len(v) == 2 {
		d.ethType = binary.BigEndian.Uint16(v)
	}
	if v := d.take(tcaFlowerIndev); v != nil {
		d.add("indev", strings.TrimRight(string(v), "\x00"))
	}
	d.addMasked(maskedMAC,
		maskedKey{"dst_mac", tcaFlowerKeyEthDst, tcaFlowerKeyEthDstMask},
		maskedKey{"src_mac", tcaFlowerKeyEthSrc, tcaFlowerKeyEthSrcMask},
	)
	// VLAN keys come before vlan_ethtype in the parser's eyes.
	u16 := func(b []byte) uint16 { return binary.NativeEndian.Uint16(b) }
	if v := d.take(tcaFlowerKeyVlanID); len(v) == 2 {
		d.add("vlan_id", strconv.Itoa(int(u16(v))))
	}
	if v := d.take(tcaFlowerKeyVlanPrio); len(v) == 1 {
		d.add("vlan_prio", strconv.Itoa(int(v[0])))
	}
	if v := d.take(tcaFlowerKeyVlanEthType); len(v) == 2 {
		d.innerEthType = binary.BigEndian.Uint16(v)
		d.add("vlan_ethtype", fmt.Sprintf("0x%04x", d.innerEthType))
	}
	if v := d.take(tcaFlowerKeyCVlanID); len(v) == 2 {
		d.add("cvlan_id", strconv.Itoa(int(u16(v))))
	}
	if v := d.take(tcaFlowerKeyCVlanPrio); len(v) == 1 {
		d.add("cvlan_prio", strconv.Itoa(int(v[0])))
	}
	if v := d.take(tcaFlowerKeyCVlanEthType); len(v) == 2 {
		d.innerEthType = binary.BigEndian.Uint16(v)
		d.add("cvlan_ethtype", fmt.Sprintf("0x%04x", d.innerEthType))
	}
	ipProto := -1
	if v := d.take(tcaFlowerKeyIPProto); len(v) == 1 {
		ipProto = int(v[0])
		d.add("ip_proto", strconv.Itoa(ipProto))
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
			d.add("ip_flags", formatIPFlags(uint8(val&known), uint8(mask&known)))
		}
	}
	d.addMasked(maskedIP,
		maskedKey{"src_ip", tcaFlowerKeyIPv4Src, tcaFlowerKeyIPv4SrcMask},
		maskedKey{"dst_ip", tcaFlowerKeyIPv4Dst, tcaFlowerKeyIPv4DstMask},
		maskedKey{"src_ip", tcaFlowerKeyIPv6Src, tcaFlowerKeyIPv6SrcMask},
		maskedKey{"dst_ip", tcaFlowerKeyIPv6Dst, tcaFlowerKeyIPv6DstMask},
		maskedKey{"arp_sip", tcaFlowerKeyARPSIP, tcaFlowerKeyARPSIPMask},
		maskedKey{"arp_tip", tcaFlowerKeyARPTIP, tcaFlowerKeyARPTIPMask},
	)
	if v := d.take(tcaFlowerKeyARPOp); len(v) == 1 {
		if m := d.take(tcaFlowerKeyARPOpMask); m != nil && !allOnes(m) {
			d.unknownKey("flower key arp_op with a mask")
		}
		d.add("arp_op", strconv.Itoa(int(v[0])))
	}
	d.addMasked(maskedMAC,
		maskedKey{"arp_sha", tcaFlowerKeyARPSha, tcaFlowerKeyARPShaMask},
		maskedKey{"arp_tha", tcaFlowerKeyARPTha, tcaFlowerKeyARPThaMask},
	)
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
		d.add("tcp_flags", fmt.Sprintf("0x%x/0x%x", val&mask&0x0FFF, mask&0x0FFF))
	}
	// ICMP type and code: the kernel keeps v4 and v6 apart too.
	d.addMasked(maskedInt,
		maskedKey{"type", tcaFlowerKeyICMPv4Type, tcaFlowerKeyICMPv4TypeMsk},
		maskedKey{"type", tcaFlowerKeyICMPv6Type, tcaFlowerKeyICMPv6TypeMsk},
		maskedKey{"code", tcaFlowerKeyICMPv4Code, tcaFlowerKeyICMPv4CodeMsk},
		maskedKey{"code", tcaFlowerKeyICMPv6Code, tcaFlowerKeyICMPv6CodeMsk},
	)
	for t := range d.raw {
		name, ok := flowerKeyNames[t]
		if !ok {
			name = fmt.Sprintf("attribute %d", t)
		}
		d.unknownKey(fmt.Sprintf("flower key %s", name))
	}
}

func (d *flowerDecoder) unknownKey(what string) {
	if d.unknown == nil {
		d.unknown = unsupported("%s", what)
	}
}

// Action attributes (TCA_ACT_*, and each kind's).
const (
	tcaActKind    = 1
	tcaActOptions = 2
	tcaActStats   = 4
	tcaStatsBasic = 1
	tcaStatsPkt64 = 8

	tcaGactParms   = 2
	tcaGactProb    = 3
	tcaMirredParms = 2
	tcaVlanParms   = 2
	tcaVlanID      = 3
	tcaVlanProto   = 4
	tcaVlanPrio    = 6

	tcEgressRedir  = 1
	tcEgressMirror = 2
	tcIngressRedir = 3
	tcIngressMirr  = 4

	tcActOK         = 0
	tcActReclassify = 1
	tcActShot       = 2
	tcActPipe       = 3
	tcActStolen     = 4
	tcActTrap       = 8
	tcActJump       = 1 << 28
	tcActGotoChain  = 2 << 28
	tcActOpcodeMask = 0xF << 28
)

// controlWord is tc's word for an action's control value.
func controlWord(c int32) (string, error) {
	switch uint32(c) & tcActOpcodeMask {
	case tcActGotoChain:
		return "", unsupported("goto chain %d (chains are not run in XDP)", uint32(c)&^tcActOpcodeMask)
	case tcActJump:
		return "", unsupported("action jump")
	}
	switch c {
	case tcActOK:
		return "pass", nil
	case tcActShot:
		return "drop", nil
	case tcActPipe:
		return "pipe", nil
	case tcActStolen:
		return "stolen", nil
	case tcActReclassify:
		return "reclassify", nil
	case tcActTrap:
		return "trap", nil
	case -1:
		return "continue", nil
	}
	return "", unsupported("action control %d", c)
}

// decodeActions turns TCA_FLOWER_ACT into "action ..." words.
func (d *flowerDecoder) decodeActions(b []byte) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	d.redirectIfindex = map[int]int{}
	first := true
	for ad.Next() {
		// Each action is nested under its order (1, 2, ...); the kernel
		// dumps them in order.
		var kind string
		var opts []byte
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				switch nad.Type() {
				case tcaActKind:
					kind = nad.String()
				case tcaActOptions:
					opts = nad.Bytes()
				case tcaActStats:
					if first {
						nad.Nested(func(sad *netlink.AttributeDecoder) error {
							for sad.Next() {
								sb := sad.Bytes()
								switch {
								case sad.Type() == tcaStatsBasic && len(sb) >= 12:
									d.bytes = binary.NativeEndian.Uint64(sb)
									if d.packets == 0 {
										d.packets = uint64(binary.NativeEndian.Uint32(sb[8:]))
									}
								case sad.Type() == tcaStatsPkt64 && len(sb) == 8:
									d.packets = binary.NativeEndian.Uint64(sb)
								}
							}
							return nil
						})
					}
				}
			}
			return nil
		})
		first = false
		if d.actionErr != nil {
			continue
		}
		words, ifindex, err := d.action(kind, opts)
		if err != nil {
			d.actionErr = err
			continue
		}
		if ifindex != 0 {
			// The redirect's place in the parsed list: the actions parsed so far.
			acts, perr := ParseActions(d.actions)
			if perr != nil {
				d.actionErr = perr
				continue
			}
			d.redirectIfindex[len(acts)] = ifindex
		}
		d.actions = append(d.actions, append([]string{"action"}, words...)...)
	}
	return ad.Err()
}

// action renders one action in tc's words.
func (d *flowerDecoder) action(kind string, opts []byte) (words []string, redirIfindex int, err error) {
	params := map[uint16][]byte{}
	if opts != nil {
		ad, err := netlink.NewAttributeDecoder(opts)
		if err != nil {
			return nil, 0, err
		}
		for ad.Next() {
			params[ad.Type()] = ad.Bytes()
		}
	}
	// Every kind's parameters start with tc_gen: index, capab, action, ...
	control := func(p []byte) (string, error) {
		if len(p) < 12 {
			return "", fmt.Errorf("action %s: short parameters", kind)
		}
		return controlWord(int32(binary.NativeEndian.Uint32(p[8:])))
	}
	switch kind {
	case "gact":
		if params[tcaGactProb] != nil {
			return nil, 0, unsupported("action gact random")
		}
		w, err := control(params[tcaGactParms])
		if err != nil {
			return nil, 0, err
		}
		return []string{w}, 0, nil
	case "mirred":
		p := params[tcaMirredParms]
		if len(p) < 28 {
			return nil, 0, errors.New("action mirred: short parameters")
		}
		ctl, err := control(p)
		if err != nil {
			return nil, 0, err
		}
		eaction := int32(binary.NativeEndian.Uint32(p[20:]))
		ifindex := int(binary.NativeEndian.Uint32(p[24:]))
		name, err := d.ifname(ifindex)
		if err != nil {
			return nil, 0, fmt.Errorf("action mirred: target ifindex %d: %w", ifindex, err)
		}
		switch eaction {
		case tcEgressRedir:
			return []string{"mirred", "egress", "redirect", "dev", name, ctl}, ifindex, nil
		case tcEgressMirror:
			return []string{"mirred", "egress", "mirror", "dev", name, ctl}, 0, nil
		case tcIngressRedir:
			return []string{"mirred", "ingress", "redirect", "dev", name, ctl}, 0, nil
		case tcIngressMirr:
			return []string{"mirred", "ingress", "mirror", "dev", name, ctl}, 0, nil
		}
		return nil, 0, unsupported("action mirred mode %d", eaction)
	case "vlan":
		p := params[tcaVlanParms]
		if len(p) < 24 {
			return nil, 0, errors.New("action vlan: short parameters")
		}
		ctl, err := control(p)
		if err != nil {
			return nil, 0, err
		}
		w := []string{"vlan"}
		switch binary.NativeEndian.Uint32(p[20:]) {
		case 1:
			w = append(w, "pop")
		case 2, 3:
			if binary.NativeEndian.Uint32(p[20:]) == 2 {
				w = append(w, "push")
			} else {
				w = append(w, "modify")
			}
			if v := params[tcaVlanID]; len(v) == 2 {
				w = append(w, "id", strconv.Itoa(int(binary.NativeEndian.Uint16(v))))
			}
			if v := params[tcaVlanProto]; len(v) == 2 {
				w = append(w, "protocol", fmt.Sprintf("0x%04x", binary.BigEndian.Uint16(v)))
			}
			if v := params[tcaVlanPrio]; len(v) == 1 {
				w = append(w, "priority", strconv.Itoa(int(v[0])))
			}
		case 4:
			return nil, 0, unsupported("action vlan pop_eth")
		case 5:
			return nil, 0, unsupported("action vlan push_eth")
		default:
			return nil, 0, unsupported("action vlan mode %d", binary.NativeEndian.Uint32(p[20:]))
		}
		return append(w, ctl), 0, nil
	case "pedit":
		w, err := decodePedit(params, control)
		return w, 0, err
	case "skbmod":
		w, err := decodeSkbmod(params, control)
		return w, 0, err
	}
	return nil, 0, unsupported("action %q", kind)
}
