package ruletext

import (
	"fmt"

	"github.com/xdpflow/xdpflow/rule"
)

// ParseFlower parses flower's match and action words (what follows
// "flower") into r: the words Format writes, and the words flower's
// kernel decoder renders a kernel filter in, which may hold what tc's own
// parser refuses (an address mask that is no prefix).
func ParseFlower(args []string, r *rule.Rule) error { return parseFlower(args, r, false) }

// ParseTypedFlower is ParseFlower for words a user typed: held to what
// tc's parser accepts.
func ParseTypedFlower(args []string, r *rule.Rule) error { return parseFlower(args, r, true) }

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
	typed   bool // ParseTypedFlower
}

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
			return Unsupported("flower key %q", k)
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

func (st *flowerState) needARP(k string) error {
	if st.l3 != rule.EthPARP && st.l3 != rule.EthPRARP {
		return fmt.Errorf("flower: %q needs protocol arp or rarp", k)
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
