// Package ruletext is a rule's text form: the canonical words Format
// writes and Parse reads back ("protocol ip pref 10 handle 1 chain 0
// flower ip_proto udp dst_port 53 action drop"), which is what the tables
// pin for every rule. The words are tc flower's own: its match keys, its
// actions and their control words, and its spelling of masked values,
// written once here for every package that shows a rule (flower for TC,
// nft for nftables). tc's command line around them stays in flower.
package ruletext

import (
	"fmt"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// Format returns the canonical text of a rule, without the device:
// "protocol ip pref 10 handle 1 chain 0 flower ip_proto udp dst_port 53
// action drop". Parse parses it back into the same rule.
func Format(r *rule.Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "protocol %s", EthTypeName(r.Protocol))
	if r.Prio != 0 { // 0: not yet assigned
		fmt.Fprintf(&b, " pref %d", r.Prio)
	}
	if r.Handle != 0 {
		fmt.Fprintf(&b, " handle %d", r.Handle)
	}
	fmt.Fprintf(&b, " chain %d flower", r.Chain)
	for _, k := range r.Keys {
		fmt.Fprintf(&b, " %s %v", k.Name, k.Value)
	}
	for _, f := range FlagWords(r) {
		b.WriteString(" " + f)
	}
	b.WriteString(FormatActions(r.Actions))
	return b.String()
}

// FlagWords are the rule's flags as the filter syntax spells them:
// skip_hw, skip_sw, keepalive DURATION.
func FlagWords(r *rule.Rule) []string {
	var f []string
	if r.SkipHW {
		f = append(f, "skip_hw")
	}
	if r.SkipSW {
		f = append(f, "skip_sw")
	}
	if r.Keepalive > 0 {
		f = append(f, "keepalive "+r.Keepalive.String())
	}
	return f
}
