package ruletext

import (
	"errors"
	"net"
	"reflect"
	"testing"

	"github.com/xdpflow/xdpflow/rule"
)

// TestParseFormatRoundTrip: Format's text parses back into the same rule.
func TestParseFormatRoundTrip(t *testing.T) {
	for _, text := range []string{
		"protocol ip pref 10 handle 1 chain 0 flower ip_proto udp dst_port 53 action drop",
		"protocol ipv6 pref 1 chain 0 flower dst_ip 2001:db8::/32 ip_proto tcp src_port 1000-2000 tcp_flags 0x2/0x12 action pass",
		"protocol 802.1Q pref 2 handle 7 chain 0 flower vlan_id 10 vlan_prio 3 vlan_ethtype ip ip_ttl 0x40 skip_hw keepalive 1s action vlan pop action mirred egress redirect dev lo",
		"protocol arp chain 0 flower arp_op reply arp_tip 10.0.0.0/8 arp_sha 02:00:00:00:00:00/ff:ff:ff:00:00:00",
	} {
		r, err := Parse("lo", text)
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if got := Format(r); got != text {
			t.Errorf("%q formats back as %q", text, got)
		}
	}
}

// TestParseTakesFormatWordsOnly: what tc's command line has around a
// rule (dev, ingress, other classifiers) is flower.ParseCommand's, not
// the rule text's.
func TestParseTakesFormatWordsOnly(t *testing.T) {
	for _, text := range []string{"dev lo protocol ip flower", "ingress protocol ip flower", "u32"} {
		if _, err := Parse("lo", text); err == nil {
			t.Errorf("%q: accepted", text)
		}
	}
	if _, err := Parse("lo", "protocol ip chain 1 flower"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("chain 1: %v, want ErrUnsupported", err)
	}
}

// TestKernelMaskNotPrefix: a kernel filter may hold an address mask that
// is no prefix (flower takes any mask over netlink); its rendering parses,
// though tc's syntax, typed by a user, refuses it.
func TestKernelMaskNotPrefix(t *testing.T) {
	r, err := Parse("lo", "pref 1 handle 0x1 protocol ip flower dst_ip 198.18.0.0/255.0.255.0 action drop")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Match.Mask.DstIp[:4]; !reflect.DeepEqual(got, []byte{255, 0, 255, 0}) {
		t.Errorf("mask %v, want 255.0.255.0", got)
	}
	typed := &rule.Rule{Protocol: rule.EthPIP}
	if err := ParseTypedFlower([]string{"dst_ip", "198.18.0.0/255.0.255.0"}, typed); err == nil {
		t.Error("typed: a mask that is no prefix accepted")
	}
}

// TestMaskedSpellings: the one spelling of masked values.
func TestMaskedSpellings(t *testing.T) {
	mac := func(s string) []byte { m, _ := net.ParseMAC(s); return m }
	for _, c := range []struct {
		got  any
		want any
	}{
		{MaskedHex(0x40, 0xff, 0xff, 0), "0x40"},
		{MaskedHex(0x10, 0xf0, 0xff, 0), "0x10/0xf0"},
		{MaskedHex(0x50, 0xfff0, 0xffff, 4), "0x0050/0xfff0"},
		{MaskedHex(0x800, 0xffff, 0xffff, 4), "0x0800"},
		{MaskedNumber(53, 0xffff, 0xffff, 0), uint64(53)},
		{MaskedNumber(0x50, 0xfff0, 0xffff, 0), "0x50/0xfff0"},
		{MaskedMAC(mac("02:00:00:00:00:01"), nil), "02:00:00:00:00:01"},
		{MaskedMAC(mac("02:00:00:00:00:00"), mac("ff:ff:ff:00:00:00")), "02:00:00:00:00:00/ff:ff:ff:00:00:00"},
		{MaskedIP(net.IP{10, 0, 0, 1}, net.IP{255, 255, 255, 255}), "10.0.0.1"},
		{MaskedIP(net.IP{10, 0, 0, 0}, net.IP{255, 0, 0, 0}), "10.0.0.0/8"},
		{MaskedIP(net.IP{198, 18, 0, 0}, net.IP{255, 0, 255, 0}), "198.18.0.0/255.0.255.0"},
		{MaskedIP(net.ParseIP("2001:db8::"), net.CIDRMask(32, 128)), "2001:db8::/32"},
		{MaskedIP(net.IP{10, 0, 0, 0}, net.CIDRMask(104, 128)), "10.0.0.0/8"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("got %#v, want %#v", c.got, c.want)
		}
	}
}
