package flower

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

func parseAdd(t *testing.T, s string) (*Command, error) {
	t.Helper()
	return ParseCommand(strings.Fields("add dev lo ingress " + s))
}

func TestParseValid(t *testing.T) {
	cases := []struct {
		in   string
		keys map[string]any
		acts []rule.ActionKind
	}{
		{"prio 10 protocol ip flower ip_proto udp dst_port 53 action drop",
			map[string]any{"ip_proto": "udp", "dst_port": uint64(53)}, []rule.ActionKind{rule.ActDrop}},
		{"pref 1 protocol ipv6 flower dst_ip 2001:db8::/32 ip_proto tcp src_port 1000-2000 tcp_flags 0x2/0x12 action pass",
			map[string]any{"dst_ip": "2001:db8::/32", "ip_proto": "tcp", "src_port": "1000-2000", "tcp_flags": "0x2/0x12"}, []rule.ActionKind{rule.ActPass}},
		{"protocol 802.1Q flower vlan_id 10 vlan_prio 3 vlan_ethtype 802.1ad cvlan_id 20 cvlan_ethtype ipv4 ip_ttl 64 action vlan pop action mirred egress redirect dev lo",
			map[string]any{"vlan_id": uint64(10), "vlan_prio": uint64(3), "vlan_ethtype": "802.1ad", "cvlan_id": uint64(20), "cvlan_ethtype": "ip", "ip_ttl": "0x40"},
			[]rule.ActionKind{rule.ActVlanPop, rule.ActRedirect}},
		{"protocol arp flower arp_op reply arp_tip 10.0.0.0/8 arp_sha 02:00:00:00:00:01/ff:ff:ff:00:00:00 action gact drop",
			map[string]any{"arp_op": "reply", "arp_tip": "10.0.0.0/8", "arp_sha": "02:00:00:00:00:00/ff:ff:ff:00:00:00"}, []rule.ActionKind{rule.ActDrop}},
		{"protocol ip flower ip_flags frag/nofirstfrag ip_tos 0x10/0xf0 skip_hw action vlan push id 5 priority 2 pipe action pedit ex munge eth dst set 02:00:00:00:00:09 pass",
			map[string]any{"ip_flags": "frag/nofirstfrag", "ip_tos": "0x10/0xf0"},
			[]rule.ActionKind{rule.ActVlanPush, rule.ActSetEthDst, rule.ActPass}},
		{"protocol ip flower ip_proto icmp type 8 code 0 action skbmod set dmac 02:00:00:00:00:01 smac 02:00:00:00:00:02 drop",
			map[string]any{"ip_proto": "icmp", "type": uint64(8), "code": uint64(0)},
			[]rule.ActionKind{rule.ActSetEthDst, rule.ActSetEthSrc, rule.ActDrop}},
		{"protocol all flower dst_mac 01:00:5e:00:00:00/25", map[string]any{"dst_mac": "01:00:5e:00:00:00/ff:ff:ff:80:00:00"}, nil},
		{"protocol ip flower src_ip 198.18.0.0/255.254.0.0 action drop", map[string]any{"src_ip": "198.18.0.0/15"}, []rule.ActionKind{rule.ActDrop}},
	}
	for _, c := range cases {
		cmd, err := parseAdd(t, c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		got := map[string]any{}
		for _, k := range cmd.Rule.Keys {
			got[k.Name] = k.Value
		}
		if !reflect.DeepEqual(got, c.keys) {
			t.Errorf("%q: keys %v, want %v", c.in, got, c.keys)
		}
		var kinds []rule.ActionKind
		for _, a := range cmd.Rule.Actions {
			kinds = append(kinds, a.Kind)
		}
		if !reflect.DeepEqual(kinds, c.acts) {
			t.Errorf("%q: actions %v, want %v", c.in, kinds, c.acts)
		}
		// The canonical text parses back into the same rule.
		r := cmd.Rule
		r.Text = ruletext.Format(r)
		back, err := ruletext.Parse("lo", r.Text)
		if err != nil {
			t.Errorf("%q: reparse %q: %v", c.in, r.Text, err)
			continue
		}
		back.Text = ruletext.Format(back)
		if !reflect.DeepEqual(back, r) {
			t.Errorf("%q: round trip differs:\n got %+v\nwant %+v", c.in, back, r)
		}
	}
}

func TestParseRefusals(t *testing.T) {
	cases := []struct {
		in, want    string
		unsupported bool
	}{
		{"protocol ip flower ct_state +trk action drop", `flower key "ct_state"`, true},
		{"protocol ip flower enc_key_id 5 action drop", `flower key "enc_key_id"`, true},
		{"protocol ip flower action mirred egress mirror dev lo", "mirror", true},
		{"protocol ip flower action mirred ingress redirect dev lo", "ingress redirect", true},
		{"protocol ip flower action goto chain 1", "goto", true},
		{"protocol ip flower action police rate 1mbit burst 10k", `action "police"`, true},
		{"protocol ip flower action vlan push id 5 continue", `control "continue"`, true},
		{"protocol ip chain 2 flower action drop", "chain 2", true},
		{"protocol ip flower ip_proto udp dst_port 2000-1000 action drop", "min must be smaller", false},
		{"protocol ip flower dst_ip 10.0.0.300 action drop", "invalid address", false},
		{"protocol ip flower dst_ip 2001:db8::1 action drop", "address family", false},
		{"protocol ip flower dst_port 53 action drop", "needs ip_proto", false},
		{"protocol ipv6 flower ip_proto icmp action drop", "does not go with", false},
		{"protocol ip flower vlan_id 5 action drop", "needs protocol 802.1Q", false},
		{"protocol ip flower dst_mac 02:00:00:00:00:0g action drop", "invalid MAC", false},
		{"protocol ip flower frobnicate 1 action drop", `unknown key "frobnicate"`, false},
		{"protocol ip flower action frob", `unknown action "frob"`, false},
		{"protocol ip flower ip_ttl 300 action drop", "invalid ip_ttl", false},
		{"protocol ip flower ip_flags fragg action drop", "invalid ip_flags", false},
		{"protocol ip flower action vlan push priority 2", `missing "id"`, false},
		{"protocol ip flower dst_ip 198.18.0.0/255.0.255.0 action drop", "inet prefix is expected", false},
		{"protocol ipv6 flower dst_ip 2001:db8::/ffff:ffff:: action drop", "inet prefix is expected", false},
	}
	for _, c := range cases {
		_, err := parseAdd(t, c.in)
		if err == nil {
			t.Errorf("%q: accepted", c.in)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q does not name %q", c.in, err, c.want)
		}
		if errors.Is(err, ruletext.ErrUnsupported) != c.unsupported {
			t.Errorf("%q: unsupported=%v, want %v (%v)", c.in, errors.Is(err, ruletext.ErrUnsupported), c.unsupported, err)
		}
	}
}

func TestParseCommandForms(t *testing.T) {
	c, err := ParseCommand(strings.Fields("del dev eth0 ingress pref 10 handle 0x2 protocol ip flower"))
	if err != nil || c.Verb != "del" || c.Prio != 10 || c.Handle != 2 || c.Dev != "eth0" {
		t.Fatalf("del: %+v %v", c, err)
	}
	c, err = ParseCommand(strings.Fields("show dev eth0 parent ffff:"))
	if err != nil || c.Verb != "show" {
		t.Fatalf("show: %+v %v", c, err)
	}
	if _, err := ParseCommand(strings.Fields("add dev eth0 egress protocol ip flower action drop")); !errors.Is(err, ruletext.ErrUnsupported) {
		t.Fatalf("egress: %v", err)
	}
	if _, err := ParseCommand(strings.Fields("add ingress protocol ip flower action drop")); err == nil {
		t.Fatal("missing dev accepted")
	}
}

// FuzzParseCommand: no input panics, and what parses formats into text that
// parses back into the same rule.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"add dev lo ingress pref 3 protocol ip flower ip_proto tcp dst_port 80-90 action drop",
		"add dev lo ingress protocol 802.1Q flower vlan_id 10 vlan_ethtype ip src_ip 10.0.0.0/8 action vlan pop action pass",
		"add dev lo ingress protocol arp flower arp_op request arp_tip 10.1.2.3 action mirred egress redirect dev lo",
		"del dev lo ingress pref 3", "show dev lo ingress",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommand(strings.Fields(s))
		if err != nil || c.Rule == nil {
			return
		}
		r := c.Rule
		r.Text = ruletext.Format(r)
		back, err := ruletext.Parse(r.Dev, r.Text)
		if err != nil {
			t.Fatalf("%q formats as %q, which does not parse: %v", s, r.Text, err)
		}
		back.Text = ruletext.Format(back)
		if back.Text != r.Text || back.Match != r.Match || !reflect.DeepEqual(back.Actions, r.Actions) {
			t.Fatalf("%q: round trip differs:\n%q\n%q", s, r.Text, back.Text)
		}
	})
}

// TestJSONKeyOrderParsesBack: the keys of a shown filter, in KeyOrder,
// are words tc's parser takes back (ip_proto before the ports), making
// the same match.
func TestJSONKeyOrderParsesBack(t *testing.T) {
	c, err := parseAdd(t, "protocol ip flower src_ip 198.18.0.0/15 ip_proto udp dst_port 53 ip_ttl 64 action drop")
	if err != nil {
		t.Fatal(err)
	}
	j := (&Shown{Rule: c.Rule}).JSON(false)
	var words []string
	for _, k := range j.KeyOrder {
		words = append(words, k, fmt.Sprint(j.Keys[k]))
	}
	if len(j.KeyOrder) != len(j.Keys) {
		t.Fatalf("KeyOrder %v, keys %v", j.KeyOrder, j.Keys)
	}
	back, err := ParseCommand(append(strings.Fields("add dev lo ingress protocol ip flower"), words...))
	if err != nil {
		t.Fatalf("%v: %v", words, err)
	}
	if back.Rule.Match != c.Rule.Match {
		t.Errorf("%v parses to another match", words)
	}
}
