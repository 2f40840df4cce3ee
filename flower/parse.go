// Package flower speaks TC flower: it parses tc's filter syntax into
// rule.Rule, formats rules back into tc text, and (with a kernel that has
// cls_flower) reads kernel filters. The words and their meaning are tc's own.
package flower

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/xdpflow/xdpflow/rule"
)

// Command is a parsed `filter` command line (everything after "filter").
type Command struct {
	Verb        string // add, replace, change, del, show
	Dev         string
	Prio        uint16
	PrioSet     bool
	Handle      uint32
	HandleSet   bool
	Protocol    uint16
	ProtocolSet bool
	Chain       uint32
	ChainSet    bool
	// Rule is set for add, replace and change: the flower match and actions.
	Rule *rule.Rule

	// typed: the words are a user's, held to what tc's parser accepts;
	// otherwise they are xdpflow's own rendering of a kernel filter.
	typed bool
}

// ErrUnsupported marks valid tc that xdpflow cannot run exactly.
var ErrUnsupported = errors.New("not supported by xdpflow")

func unsupported(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrUnsupported)
}

var verbs = map[string]string{
	"add": "add", "a": "add", "replace": "replace", "r": "replace", "change": "change", "c": "change",
	"delete": "del", "del": "del", "d": "del", "show": "show", "list": "show", "ls": "show", "lst": "show", "s": "show",
}

// ParseCommand parses "VERB dev DEV ingress [pref P] [handle H] [protocol P]
// [chain C] [flower MATCH... [action ...]]".
func ParseCommand(args []string) (*Command, error) {
	if len(args) == 0 {
		return nil, errors.New("filter: missing command (add, replace, change, del, show)")
	}
	verb, ok := verbs[args[0]]
	if !ok {
		return nil, fmt.Errorf("filter: unknown command %q (add, replace, change, del, show)", args[0])
	}
	c := &Command{Verb: verb, typed: true}
	rest, err := c.parseHead(args[1:])
	if err != nil {
		return nil, err
	}
	if c.Dev == "" {
		return nil, errors.New("filter: missing \"dev DEV\"")
	}
	switch verb {
	case "add", "replace", "change":
		if len(rest) == 0 {
			return nil, errors.New("filter: missing classifier: \"flower\"")
		}
		r, err := c.parseRule(rest)
		if err != nil {
			return nil, err
		}
		c.Rule = r
	default:
		if len(rest) > 0 && rest[0] == "flower" {
			rest = rest[1:]
		}
		if len(rest) > 0 {
			return nil, fmt.Errorf("filter %s: unexpected %q", verb, rest[0])
		}
		if c.HandleSet && !c.PrioSet && verb == "del" {
			return nil, errors.New("filter del: \"handle\" needs \"pref\"")
		}
	}
	return c, nil
}

// parseHead consumes the options tc allows before the classifier kind and
// returns what follows (starting at "flower", if present).
func (c *Command) parseHead(args []string) ([]string, error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("filter: %q needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch a {
		case "dev":
			v, err := next()
			if err != nil {
				return nil, err
			}
			c.Dev = v
		case "ingress":
		case "egress":
			return nil, unsupported("filter: egress (xdpflow runs ingress filters only)")
		case "parent":
			v, err := next()
			if err != nil {
				return nil, err
			}
			if v != "ffff:" && v != "ffff:fff2" && v != "ffff:0" {
				return nil, unsupported("filter: parent %s (xdpflow runs the ingress/clsact ingress block only)", v)
			}
		case "root":
			return nil, unsupported("filter: root (xdpflow runs ingress filters only)")
		case "pref", "prio", "priority":
			v, err := next()
			if err != nil {
				return nil, err
			}
			p, err := strconv.ParseUint(v, 0, 16)
			if err != nil {
				return nil, fmt.Errorf("filter: invalid pref %q", v)
			}
			c.Prio, c.PrioSet = uint16(p), true
		case "handle":
			v, err := next()
			if err != nil {
				return nil, err
			}
			h, err := strconv.ParseUint(v, 0, 32)
			if err != nil || h == 0 {
				return nil, fmt.Errorf("filter: invalid handle %q", v)
			}
			c.Handle, c.HandleSet = uint32(h), true
		case "protocol":
			v, err := next()
			if err != nil {
				return nil, err
			}
			p, err := ParseEthType(v)
			if err != nil {
				return nil, fmt.Errorf("filter: invalid protocol %q", v)
			}
			c.Protocol, c.ProtocolSet = p, true
		case "chain":
			v, err := next()
			if err != nil {
				return nil, err
			}
			ch, err := strconv.ParseUint(v, 0, 32)
			if err != nil {
				return nil, fmt.Errorf("filter: invalid chain %q", v)
			}
			c.Chain, c.ChainSet = uint32(ch), true
			if ch != 0 {
				return nil, unsupported("filter: chain %d (xdpflow runs chain 0 only)", ch)
			}
		case "flower":
			return args[i:], nil
		case "u32", "bpf", "matchall", "basic", "fw", "route", "flow", "cgroup", "tcindex":
			return nil, unsupported("filter: classifier %q (xdpflow runs flower)", a)
		default:
			return nil, fmt.Errorf("filter: unknown option %q", a)
		}
	}
	return nil, nil
}

func (c *Command) parseRule(args []string) (*rule.Rule, error) {
	if args[0] != "flower" {
		return nil, fmt.Errorf("filter: expected \"flower\", got %q", args[0])
	}
	r := &rule.Rule{Dev: c.Dev, Prio: c.Prio, Handle: c.Handle, Chain: c.Chain, Protocol: rule.EthPAll}
	if c.ProtocolSet {
		r.Protocol = c.Protocol
	}
	if err := parseFlower(args[1:], r, c.typed); err != nil {
		return nil, err
	}
	return r, nil
}

// ParseRuleText parses the canonical text Format produces.
func ParseRuleText(dev, text string) (*rule.Rule, error) {
	c := &Command{Verb: "add", Dev: dev}
	rest, err := c.parseHead(strings.Fields(text))
	if err != nil {
		return nil, err
	}
	if len(rest) == 0 {
		return nil, fmt.Errorf("rule text %q: no flower", text)
	}
	return c.parseRule(rest)
}

// ethTypes maps tc's protocol names (ll_proto) to ethertypes.
var ethTypes = map[string]uint16{
	"all": rule.EthPAll, "ip": rule.EthPIP, "ipv4": rule.EthPIP, "ipv6": rule.EthPIPv6, "arp": rule.EthPARP,
	"rarp": rule.EthPRARP, "802.1q": rule.EthP8021Q, "802.1ad": rule.EthP8021AD, "8021q": rule.EthP8021Q,
	"8021ad": rule.EthP8021AD, "mpls_uc": 0x8847, "mpls_mc": 0x8848, "lldp": 0x88CC, "ipx": 0x8137,
	"loop": 0x0060, "pppoe_disc": 0x8863, "pppoe_sess": 0x8864, "802_3": 0x0001,
}

// ParseEthType parses a tc protocol name or number.
func ParseEthType(s string) (uint16, error) {
	if v, ok := ethTypes[strings.ToLower(s)]; ok {
		return v, nil
	}
	v, err := strconv.ParseUint(s, 0, 16)
	if err != nil {
		return 0, fmt.Errorf("unknown protocol %q", s)
	}
	return uint16(v), nil
}

// EthTypeName is the inverse of ParseEthType, in tc's spelling.
func EthTypeName(v uint16) string {
	switch v {
	case rule.EthPAll:
		return "all"
	case rule.EthPIP:
		return "ip"
	case rule.EthPIPv6:
		return "ipv6"
	case rule.EthPARP:
		return "arp"
	case rule.EthPRARP:
		return "rarp"
	case rule.EthP8021Q:
		return "802.1Q"
	case rule.EthP8021AD:
		return "802.1ad"
	}
	return fmt.Sprintf("0x%04x", v)
}

var ipProtos = map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}

func ipProtoName(v uint8) string {
	for n, p := range ipProtos {
		if p == v {
			return n
		}
	}
	return strconv.Itoa(int(v))
}

// Keys tc flower has that xdpflow cannot run. Named so the refusal can say so.
var unsupportedKeys = map[string]bool{
	"enc_key_id": true, "enc_dst_ip": true, "enc_src_ip": true, "enc_dst_port": true, "enc_src_port": true,
	"enc_tos": true, "enc_ttl": true, "enc_flags": true, "geneve_opts": true, "vxlan_opts": true,
	"erspan_opts": true, "gtp_opts": true, "pfcp_opts": true, "ct_state": true, "ct_zone": true,
	"ct_mark": true, "ct_label": true, "mpls": true, "mpls_label": true, "mpls_tc": true, "mpls_bos": true,
	"mpls_ttl": true, "lse": true, "pppoe_sid": true, "ppp_proto": true, "l2_miss": true,
	"num_of_vlans": true, "cfm": true, "spi": true, "l2tpv3_sid": true, "hash": true, "classid": true,
	"flowid": true, "vlan_dei": true, "cvlan_dei": true,
}

// flowerState tracks what the match has established, for tc's validity rules.
type flowerState struct {
	r       *rule.Rule
	l3      uint16 // innermost ethertype pinned by protocol/vlan_ethtype/cvlan_ethtype
	ipProto int    // -1 until ip_proto is given
	seen    map[string]bool
	typed   bool // Command.typed
}

// ParseKeepalive reads a keepalive interval (rule.Rule.Keepalive): a Go
// duration from 1ms to 1h, kept in whole milliseconds as the datapath does.
func ParseKeepalive(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Millisecond || d > time.Hour {
		return 0, fmt.Errorf("keepalive %q: want an interval from 1ms to 1h (1s, 500ms)", s)
	}
	return d.Truncate(time.Millisecond), nil
}

// ParseFlower parses flower's match and action words into r.
func ParseFlower(args []string, r *rule.Rule) error { return parseFlower(args, r, false) }

func parseFlower(args []string, r *rule.Rule, typed bool) error {
	st := &flowerState{r: r, ipProto: -1, seen: map[string]bool{}, typed: typed}
	m := &r.Match
	if r.Protocol != rule.EthPAll {
		m.Key.EthType[0], m.Mask.EthType[0] = rule.HostToBE16(r.Protocol), 0xFFFF
		st.l3 = r.Protocol
	}
	for i := 0; i < len(args); i++ {
		k := args[i]
		if k == "action" || k == "actions" {
			acts, err := ParseActions(args[i:])
			if err != nil {
				return err
			}
			r.Actions = acts
			return nil
		}
		switch k {
		case "skip_hw":
			r.SkipHW = true
			continue
		case "skip_sw":
			r.SkipSW = true
			continue
		case "keepalive":
			// xdpflow's own: see rule.Rule.Keepalive.
			if i+1 >= len(args) {
				return fmt.Errorf("flower: keepalive needs an interval (1s, 500ms)")
			}
			d, err := ParseKeepalive(args[i+1])
			if err != nil {
				return fmt.Errorf("flower: %w", err)
			}
			r.Keepalive = d
			i++
			continue
		case "verbose":
			continue
		}
		if unsupportedKeys[k] {
			return unsupported("flower key %q", k)
		}
		if i+1 >= len(args) {
			return fmt.Errorf("flower: %q needs a value", k)
		}
		v := args[i+1]
		i++
		if st.seen[k] {
			return fmt.Errorf("flower: %q given twice", k)
		}
		st.seen[k] = true
		if err := st.key(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (st *flowerState) addKey(name string, v any) {
	st.r.Keys = append(st.r.Keys, rule.KeyValue{Name: name, Value: v})
}

func (st *flowerState) needVLAN(k string, outer bool) error {
	if outer {
		if p := st.r.Protocol; p != rule.EthP8021Q && p != rule.EthP8021AD {
			return fmt.Errorf("flower: %q needs protocol 802.1Q or 802.1ad", k)
		}
		return nil
	}
	m := &st.r.Match
	if m.Mask.EthType[1] == 0 {
		return fmt.Errorf("flower: %q needs vlan_ethtype 802.1Q or 802.1ad", k)
	}
	if t := rule.BE16ToHost(m.Key.EthType[1]); t != rule.EthP8021Q && t != rule.EthP8021AD {
		return fmt.Errorf("flower: %q needs vlan_ethtype 802.1Q or 802.1ad", k)
	}
	return nil
}

func (st *flowerState) needIP(k string) error {
	if st.l3 != rule.EthPIP && st.l3 != rule.EthPIPv6 {
		return fmt.Errorf("flower: %q needs protocol ip or ipv6", k)
	}
	return nil
}

func (st *flowerState) needL4(k string) error {
	switch st.ipProto {
	case 6, 17, 132:
		return nil
	}
	return fmt.Errorf("flower: %q needs ip_proto tcp, udp or sctp", k)
}

func (st *flowerState) key(k, v string) error {
	r := st.r
	m := &r.Match
	switch k {
	case "indev":
		ifi, err := net.InterfaceByName(v)
		if err != nil {
			return fmt.Errorf("flower: indev %q: no such device", v)
		}
		m.Key.Ifindex, m.Mask.Ifindex = uint32(ifi.Index), 0xFFFFFFFF
		st.addKey(k, v)
	case "dst_mac", "src_mac", "arp_sha", "arp_tha":
		if (k == "arp_sha" || k == "arp_tha") && st.l3 != rule.EthPARP && st.l3 != rule.EthPRARP {
			return fmt.Errorf("flower: %q needs protocol arp or rarp", k)
		}
		val, mask, err := parseMaskedMAC(v)
		if err != nil {
			return fmt.Errorf("flower: %s: %w", k, err)
		}
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
		st.addKey(k, formatMaskedMAC(val, mask))
	case "vlan_id", "cvlan_id":
		outer := k == "vlan_id"
		if err := st.needVLAN(k, outer); err != nil {
			return err
		}
		id, err := strconv.ParseUint(v, 0, 16)
		if err != nil || id > 4095 {
			return fmt.Errorf("flower: invalid %s %q (0-4095)", k, v)
		}
		i := tagIndex(outer)
		m.Key.VlanTci[i] = rule.HostToBE16(rule.BE16ToHost(m.Key.VlanTci[i]) | uint16(id))
		m.Mask.VlanTci[i] = rule.HostToBE16(rule.BE16ToHost(m.Mask.VlanTci[i]) | 0x0FFF)
		st.addKey(k, uint64(id))
	case "vlan_prio", "cvlan_prio":
		outer := k == "vlan_prio"
		if err := st.needVLAN(k, outer); err != nil {
			return err
		}
		p, err := strconv.ParseUint(v, 0, 8)
		if err != nil || p > 7 {
			return fmt.Errorf("flower: invalid %s %q (0-7)", k, v)
		}
		i := tagIndex(outer)
		m.Key.VlanTci[i] = rule.HostToBE16(rule.BE16ToHost(m.Key.VlanTci[i]) | uint16(p)<<13)
		m.Mask.VlanTci[i] = rule.HostToBE16(rule.BE16ToHost(m.Mask.VlanTci[i]) | 0xE000)
		st.addKey(k, uint64(p))
	case "vlan_ethtype", "cvlan_ethtype":
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
		m.Key.EthType[i], m.Mask.EthType[i] = rule.HostToBE16(t), 0xFFFF
		st.l3 = t
		st.addKey(k, EthTypeName(t))
	case "ip_proto":
		if err := st.needIP(k); err != nil {
			return err
		}
		p, ok := ipProtos[v]
		if !ok {
			n, err := strconv.ParseUint(v, 0, 8)
			if err != nil {
				return fmt.Errorf("flower: invalid ip_proto %q", v)
			}
			p = uint8(n)
		}
		if (p == 1 && st.l3 == rule.EthPIPv6) || (p == 58 && st.l3 == rule.EthPIP) {
			return fmt.Errorf("flower: ip_proto %s does not go with protocol %s", v, EthTypeName(st.l3))
		}
		m.Key.IpProto, m.Mask.IpProto = p, 0xFF
		st.ipProto = int(p)
		st.addKey(k, ipProtoName(p))
	case "ip_tos", "ip_ttl":
		if err := st.needIP(k); err != nil {
			return err
		}
		val, mask, err := parseMaskedU8(v)
		if err != nil {
			return fmt.Errorf("flower: invalid %s %q", k, v)
		}
		if k == "ip_tos" {
			m.Key.IpTos, m.Mask.IpTos = val&mask, mask
		} else {
			m.Key.IpTtl, m.Mask.IpTtl = val&mask, mask
		}
		st.addKey(k, formatMaskedHex(uint64(val), uint64(mask), 0xFF))
	case "ip_flags":
		if err := st.needIP(k); err != nil {
			return err
		}
		val, mask, err := parseIPFlags(v)
		if err != nil {
			return err
		}
		m.Key.IpFrag, m.Mask.IpFrag = val, mask
		st.addKey(k, formatIPFlags(val, mask))
	case "dst_ip", "src_ip", "arp_tip", "arp_sip":
		arp := strings.HasPrefix(k, "arp_")
		if arp {
			if st.l3 != rule.EthPARP && st.l3 != rule.EthPRARP {
				return fmt.Errorf("flower: %q needs protocol arp or rarp", k)
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
		st.addKey(k, formatPrefix(ipn))
	case "dst_port", "src_port":
		if err := st.needL4(k); err != nil {
			return err
		}
		return st.port(k, v)
	case "tcp_flags":
		if st.ipProto != 6 {
			return errors.New("flower: \"tcp_flags\" needs ip_proto tcp")
		}
		val, mask, err := parseMaskedUint(v, 0x0FFF)
		if err != nil {
			return fmt.Errorf("flower: invalid tcp_flags %q", v)
		}
		m.Key.TcpFlags, m.Mask.TcpFlags = rule.HostToBE16(uint16(val&mask)), rule.HostToBE16(uint16(mask))
		st.addKey(k, formatMaskedHex(val, mask, 0x0FFF))
	case "type", "code":
		if st.ipProto != 1 && st.ipProto != 58 {
			return fmt.Errorf("flower: %q needs ip_proto icmp or icmpv6", k)
		}
		val, mask, err := parseMaskedU8(v)
		if err != nil {
			return fmt.Errorf("flower: invalid %s %q", k, v)
		}
		if k == "type" {
			m.Key.IcmpType, m.Mask.IcmpType = val&mask, mask
		} else {
			m.Key.IcmpCode, m.Mask.IcmpCode = val&mask, mask
		}
		if mask == 0xFF {
			st.addKey(k, uint64(val))
		} else {
			st.addKey(k, formatMaskedHex(uint64(val), uint64(mask), 0xFF))
		}
	case "arp_op":
		if st.l3 != rule.EthPARP && st.l3 != rule.EthPRARP {
			return errors.New("flower: \"arp_op\" needs protocol arp or rarp")
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
		m.Key.IpProto, m.Mask.IpProto = op, 0xFF
		name := strconv.Itoa(int(op))
		if op == 1 {
			name = "request"
		} else if op == 2 {
			name = "reply"
		}
		st.addKey(k, name)
	default:
		return fmt.Errorf("flower: unknown key %q", k)
	}
	return nil
}

func tagIndex(outer bool) int {
	if outer {
		return 0
	}
	return 1
}

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
	if mask == 0xFFFF {
		st.addKey(k, val)
	} else {
		st.addKey(k, formatMaskedHex(val, mask, 0xFFFF))
	}
	return nil
}

func parseMaskedUint(s string, full uint64) (val, mask uint64, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	val, err = strconv.ParseUint(vs, 0, 64)
	if err != nil || val > full {
		return 0, 0, fmt.Errorf("invalid value %q", s)
	}
	mask = full
	if hasMask {
		mask, err = strconv.ParseUint(ms, 0, 64)
		if err != nil || mask > full {
			return 0, 0, fmt.Errorf("invalid mask %q", s)
		}
	}
	return val, mask, nil
}

func parseMaskedU8(s string) (uint8, uint8, error) {
	v, m, err := parseMaskedUint(s, 0xFF)
	return uint8(v), uint8(m), err
}

func formatMaskedHex(val, mask, full uint64) any {
	if mask == full {
		return fmt.Sprintf("0x%x", val)
	}
	return fmt.Sprintf("0x%x/0x%x", val, mask)
}

func parseMaskedMAC(s string) (val, mask net.HardwareAddr, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	val, err = net.ParseMAC(vs)
	if err != nil || len(val) != 6 {
		return nil, nil, fmt.Errorf("invalid MAC address %q", vs)
	}
	mask = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if hasMask {
		if n, perr := strconv.Atoi(ms); perr == nil {
			if n < 0 || n > 48 {
				return nil, nil, fmt.Errorf("invalid MAC prefix length %q", ms)
			}
			mask = make(net.HardwareAddr, 6)
			for i := 0; i < n; i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
		} else if mask, err = net.ParseMAC(ms); err != nil || len(mask) != 6 {
			return nil, nil, fmt.Errorf("invalid MAC mask %q", ms)
		}
	}
	for i := range val {
		val[i] &= mask[i]
	}
	return val, mask, nil
}

func formatMaskedMAC(val, mask net.HardwareAddr) string {
	full := true
	for _, b := range mask {
		full = full && b == 0xff
	}
	if full {
		return val.String()
	}
	return val.String() + "/" + mask.String()
}

func parsePrefix(s string) (*net.IPNet, error) {
	if !strings.Contains(s, "/") {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("invalid address %q", s)
		}
		bitsLen := 128
		if ip.To4() != nil {
			ip, bitsLen = ip.To4(), 32
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bitsLen, bitsLen)}, nil
	}
	_, ipn, err := net.ParseCIDR(s)
	if err != nil {
		// ADDR/MASK with the mask written as an address: what a kernel
		// filter may hold that is no prefix.
		as, ms, _ := strings.Cut(s, "/")
		ip, mask := net.ParseIP(as), net.ParseIP(ms)
		if ip == nil || mask == nil || (ip.To4() == nil) != (mask.To4() == nil) {
			return nil, fmt.Errorf("invalid prefix %q", s)
		}
		if ip.To4() != nil {
			ip, mask = ip.To4(), mask.To4()
		}
		m := net.IPMask(mask)
		return &net.IPNet{IP: ip.Mask(m), Mask: m}, nil
	}
	if ipn.IP.To4() != nil {
		ipn.IP = ipn.IP.To4()
	}
	return ipn, nil
}

// tcPrefix refuses what tc's get_prefix does and a kernel filter may
// still hold: a mask that is no prefix, or an IPv6 mask written as an
// address (iproute2's get_netmask reads dotted IPv4 masks only).
func tcPrefix(s string, n *net.IPNet) error {
	_, bitsLen := n.Mask.Size()
	_, ms, _ := strings.Cut(s, "/")
	if bitsLen == 0 || strings.Contains(ms, ":") {
		return fmt.Errorf("%q: inet prefix is expected (ADDR/LEN, or an IPv4 mask of contiguous ones)", s)
	}
	return nil
}

func formatPrefix(n *net.IPNet) string {
	ones, bitsLen := n.Mask.Size()
	switch {
	case bitsLen == 0: // not a prefix
		return n.IP.String() + "/" + net.IP(n.Mask).String()
	case ones == bitsLen:
		return n.IP.String()
	}
	return n.String()
}

// parseIPFlags parses flower's ip_flags: frag, nofrag, firstfrag, nofirstfrag
// joined by "/".
func parseIPFlags(s string) (val, mask uint8, err error) {
	for _, f := range strings.Split(s, "/") {
		var bit uint8
		set := true
		switch f {
		case "frag":
			bit = rule.FragIsFragment
		case "nofrag":
			bit, set = rule.FragIsFragment, false
		case "firstfrag":
			bit = rule.FragFirst
		case "nofirstfrag":
			bit, set = rule.FragFirst, false
		default:
			return 0, 0, fmt.Errorf("flower: invalid ip_flags %q (frag, nofrag, firstfrag, nofirstfrag)", f)
		}
		if mask&bit != 0 {
			return 0, 0, fmt.Errorf("flower: ip_flags %q names a flag twice", s)
		}
		mask |= bit
		if set {
			val |= bit
		}
	}
	return val, mask, nil
}

func formatIPFlags(val, mask uint8) string {
	var parts []string
	if mask&rule.FragIsFragment != 0 {
		if val&rule.FragIsFragment != 0 {
			parts = append(parts, "frag")
		} else {
			parts = append(parts, "nofrag")
		}
	}
	if mask&rule.FragFirst != 0 {
		if val&rule.FragFirst != 0 {
			parts = append(parts, "firstfrag")
		} else {
			parts = append(parts, "nofirstfrag")
		}
	}
	return strings.Join(parts, "/")
}
