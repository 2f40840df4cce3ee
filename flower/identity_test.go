package flower

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// identityCorpus is filters of the whole grammar xdpflow reads, as the
// kernel's dump would give them: each encoded into a filter message and
// decoded back.
func identityCorpus(t *testing.T) []*KernelFilter {
	t.Helper()
	texts := []string{
		"pref 10 handle 1 protocol ip flower ip_proto udp dst_port 53 action drop",
		"pref 1 handle 2 protocol ipv6 flower dst_ip 2001:db8::/32 ip_proto tcp src_port 1000-2000 tcp_flags 0x2/0x12 action pass",
		"pref 3 handle 3 protocol 802.1Q flower vlan_id 10 vlan_prio 3 vlan_ethtype 802.1ad cvlan_id 20 cvlan_ethtype ipv4 ip_ttl 64 action vlan pop action mirred egress redirect dev lo",
		"pref 4 handle 4 protocol arp flower arp_op reply arp_tip 10.0.0.0/8 arp_sha 02:00:00:00:00:01/ff:ff:ff:00:00:00 action gact drop",
		"pref 5 handle 5 protocol ip flower ip_flags frag/nofirstfrag ip_tos 0x10/0xf0 skip_hw action vlan push id 5 priority 2 pipe action pedit ex munge eth dst set 02:00:00:00:00:09 pass",
		"pref 6 handle 6 protocol ip flower ip_proto icmp type 8 code 0 action skbmod set dmac 02:00:00:00:00:01 smac 02:00:00:00:00:02 drop",
		"pref 7 handle 7 protocol all flower dst_mac 01:00:5e:00:00:00/25 action drop",
		"pref 8 handle 8 protocol ip flower src_ip 198.18.0.0/255.254.0.0 action drop",
		"pref 9 handle 9 protocol ip flower dst_ip 10.0.0.1 action vlan modify id 7 protocol 802.1ad pipe action mirred egress redirect dev lo",
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		f := randomFilter(t, rng, uint16(1+rng.Intn(5)), uint32(100+i))
		texts = append(texts, strings.Replace(ruletext.Format(f.Rule), "chain 0 ", "", 1))
	}
	var out []*KernelFilter
	for _, text := range texts {
		cmd, err := ParseCommand(strings.Fields("add dev lo ingress " + text))
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		r := cmd.Rule
		for i := range r.Actions {
			if r.Actions[i].Kind == rule.ActRedirect {
				r.Actions[i].Dev, r.Actions[i].Ifindex = "lo", 1
			}
		}
		m, err := FilterMessage(7, r)
		if err != nil {
			t.Fatalf("%q: encode: %v", text, err)
		}
		f, err := DecodeFilter(m, "b0", func(int) (string, error) { return "lo", nil })
		if err != nil || f.Rule == nil {
			t.Fatalf("%q: decode: %v %v", text, err, f.Err)
		}
		out = append(out, f)
	}
	return out
}

// TestIdentityAsPersisted: a mirrored rule, its punt and its keepalive
// variant have the identity their persisted text parses back into (what a
// table reopened by a new process knows them by), so a restarted daemon
// finds every rule installed already and keeps its counters.
func TestIdentityAsPersisted(t *testing.T) {
	for _, f := range identityCorpus(t) {
		for _, r := range []*rule.Rule{f.Rule, f.PuntRule(), f.withKeepalive(time.Second)} {
			back, err := ruletext.Parse("b0", r.Text)
			if err != nil {
				t.Fatalf("%q: reparse: %v", r.Text, err)
			}
			back.Source = r.Source
			if back.Identity() != r.Identity() {
				t.Errorf("%q: its persisted text parses back into another identity", r.Text)
			}
		}
	}
}

// TestIdentityTellsRulesApart: rules that differ in anything their text
// says (place, match, actions, flags) have different identities; keys
// written differently for the same masked match do not.
func TestIdentityTellsRulesApart(t *testing.T) {
	corpus := identityCorpus(t)
	seen := map[rule.Identity]string{}
	for _, f := range corpus {
		for _, r := range []*rule.Rule{f.Rule, f.PuntRule(), f.withKeepalive(time.Second)} {
			if other, ok := seen[r.Identity()]; ok && other != r.Text {
				t.Errorf("%q and %q have one identity", r.Text, other)
			}
			seen[r.Identity()] = r.Text
		}
	}
	base := corpus[0].Rule
	changes := map[string]func(r *rule.Rule){
		"source":    func(r *rule.Rule) { r.Source = rule.SourceCLI },
		"chain":     func(r *rule.Rule) { r.Chain = 1 },
		"pref":      func(r *rule.Rule) { r.Prio++ },
		"handle":    func(r *rule.Rule) { r.Handle++ },
		"protocol":  func(r *rule.Rule) { r.Protocol = rule.EthPIPv6 },
		"key":       func(r *rule.Rule) { r.Match.Key.DstPort ^= r.Match.Mask.DstPort },
		"mask":      func(r *rule.Rule) { r.Match.Mask.IpTtl = 0xff },
		"range":     func(r *rule.Rule) { r.Match.DstPortRange = rule.PortRange{Min: 1, Max: 2} },
		"more":      func(r *rule.Rule) { r.More = []rule.Match{r.Match} },
		"action":    func(r *rule.Rule) { r.Actions = []rule.Action{{Kind: rule.ActPass}} },
		"redirect":  func(r *rule.Rule) { r.Actions = []rule.Action{{Kind: rule.ActRedirect, Dev: "lo"}} },
		"skip_hw":   func(r *rule.Rule) { r.SkipHW = true },
		"skip_sw":   func(r *rule.Rule) { r.SkipSW = true },
		"keepalive": func(r *rule.Rule) { r.Keepalive = time.Millisecond },
		"name":      func(r *rule.Rule) { r.Name = "x" },
		"digest":    func(r *rule.Rule) { r.Digest = "0123" },
	}
	for what, change := range changes {
		r := *base
		change(&r)
		if r.Identity() == base.Identity() {
			t.Errorf("a rule with another %s has the same identity", what)
		}
	}
	// Each field of an action: on the rule that pops a tag and redirects.
	redirecting := corpus[2].Rule
	actionChanges := map[string]func(a []rule.Action){
		"redirect target": func(a []rule.Action) { a[1].Dev = "b0" },
		"vlan id":         func(a []rule.Action) { a[0].VlanID = 3 },
		"vlan priority":   func(a []rule.Action) { a[0].VlanPrio, a[0].HasPrio = 1, true },
		"vlan protocol":   func(a []rule.Action) { a[0].VlanProto = rule.EthP8021AD },
		"mac":             func(a []rule.Action) { a[0].MAC = []byte{2, 0, 0, 0, 0, 1} },
	}
	for what, change := range actionChanges {
		r := *redirecting
		r.Actions = append([]rule.Action(nil), r.Actions...)
		change(r.Actions)
		if r.Identity() == redirecting.Identity() {
			t.Errorf("a rule with another %s has the same identity", what)
		}
	}
	// Bits of the key outside its mask are no part of the match.
	r := *base
	r.Match.Key.IpTtl = 9
	r.Keys = append([]rule.KeyValue{{Name: "comment", Value: "written otherwise"}}, r.Keys...)
	if r.Identity() != base.Identity() {
		t.Error(fmt.Sprintf("%q: key bits outside the mask change its identity", base.Text))
	}
}
