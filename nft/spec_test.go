package nft

import (
	"testing"

	"github.com/xdpflow/xdpflow/rule"
)

// TestSpecKeepsIdentity: an installed part's spec, read back as a table
// reopened by a new process reads it, has the part's identity; a part of
// another match, action, level or name has another.
func TestSpecKeepsIdentity(t *testing.T) {
	rs := &Ruleset{Dev: "b0"}
	var m rule.Match
	m.Key.IpProto, m.Mask.IpProto = 17, 0xff
	drop := []rule.Action{{Kind: rule.ActDrop}}
	p := part(rs, "netdev/t/c/5", 0, 2, []rule.Match{m}, drop)
	back, err := ParseSpec("b0", p.Text)
	if err != nil {
		t.Fatal(err)
	}
	if back.Identity() != p.Identity() {
		t.Fatalf("%q parses back into another identity", p.Text)
	}
	other := m
	other.Key.IpProto = 6
	for what, q := range map[string]*rule.Rule{
		"match":  part(rs, "netdev/t/c/5", 0, 2, []rule.Match{other}, drop),
		"more":   part(rs, "netdev/t/c/5", 0, 2, []rule.Match{m, other}, drop),
		"action": part(rs, "netdev/t/c/5", 0, 2, []rule.Match{m}, []rule.Action{{Kind: rule.ActPass}}),
		"level":  part(rs, "netdev/t/c/5", 0, 3, []rule.Match{m}, drop),
		"part":   part(rs, "netdev/t/c/5", 1, 2, []rule.Match{m}, drop),
		"rule":   part(rs, "netdev/t/c/6", 0, 2, []rule.Match{m}, drop),
	} {
		if q.Identity() == p.Identity() {
			t.Errorf("a part of another %s has the same identity", what)
		}
	}
}
