package flower

import (
	"fmt"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// Stats are a rule's counters as shown.
type Stats struct {
	Packets    uint64 `json:"packets"`
	Bytes      uint64 `json:"bytes"`
	LastUsedMs uint64 `json:"last_used_ms"`
	Used       bool   `json:"-"` // false: never hit
}

// Shown is one filter as `filter show` prints it.
type Shown struct {
	Rule      *rule.Rule
	Offloaded bool
	Reason    string
	Punted    bool   // not offloaded, and a punt entry sends its packets on to TC
	Stats     Stats  // XDP's counters
	TC        *Stats // the kernel's counters, for a filter TC holds
}

// JSONFilter is the JSON form of one filter; scripts rely on these names.
type JSONFilter struct {
	Dev      string         `json:"dev"`
	Kind     string         `json:"kind"`
	Pref     uint16         `json:"pref"`
	Handle   uint32         `json:"handle"`
	Protocol string         `json:"protocol"`
	Chain    uint32         `json:"chain"`
	Source   string         `json:"source"`
	Name     string         `json:"name,omitempty"` // nft: family/table/chain/handle
	Keys     map[string]any `json:"keys"`
	// KeyOrder is Keys' names in the order they are typed (tc's parser
	// needs some before others: ip_proto before dst_port).
	KeyOrder  []string `json:"-"`
	Flags     []string `json:"flags,omitempty"`
	Actions   []string `json:"actions"`
	Offloaded bool     `json:"offloaded"`
	Reason    string   `json:"reason,omitempty"`
	Punted    bool     `json:"punted,omitempty"`
	Stats     *Stats   `json:"stats,omitempty"`    // in XDP
	TCStats   *Stats   `json:"tc_stats,omitempty"` // in TC (the kernel's)
}

// JSON returns the JSON form; stats only with withStats (like tc -s).
func (s *Shown) JSON(withStats bool) JSONFilter {
	r := s.Rule
	j := JSONFilter{
		Dev: r.Dev, Kind: "flower", Pref: r.Prio, Handle: r.Handle, Protocol: ruletext.EthTypeName(r.Protocol),
		Chain: r.Chain, Source: r.Source.String(), Keys: map[string]any{}, Actions: []string{},
		Offloaded: s.Offloaded, Reason: s.Reason, Punted: s.Punted,
	}
	for _, k := range r.Keys {
		j.Keys[k.Name] = k.Value
		j.KeyOrder = append(j.KeyOrder, k.Name)
	}
	j.Flags = ruletext.FlagWords(r)
	for _, a := range r.Actions {
		j.Actions = append(j.Actions, ruletext.FormatAction(a))
	}
	if withStats {
		st := s.Stats
		j.Stats = &st
		j.TCStats = s.TC
	}
	return j
}

// Text returns the tc-like text form of one filter.
func (s *Shown) Text(withStats bool) string {
	r := s.Rule
	var b strings.Builder
	fmt.Fprintf(&b, "filter protocol %s pref %d flower chain %d handle 0x%x\n", ruletext.EthTypeName(r.Protocol), r.Prio, r.Chain, r.Handle)
	for _, k := range r.Keys {
		fmt.Fprintf(&b, "  %s %v\n", k.Name, k.Value)
	}
	for _, f := range ruletext.FlagWords(r) {
		b.WriteString("  " + f + "\n")
	}
	switch {
	case s.Offloaded:
		b.WriteString("  in_xdp\n")
	case s.Punted:
		fmt.Fprintf(&b, "  not_in_xdp (%s; its packets go on to TC)\n", s.Reason)
	default:
		fmt.Fprintf(&b, "  not_in_xdp (%s)\n", s.Reason)
	}
	if len(r.Actions) == 0 {
		b.WriteString("\t(no actions: pass)\n")
	}
	for i, a := range r.Actions {
		fmt.Fprintf(&b, "\taction order %d: %s\n", i+1, ruletext.FormatAction(a))
	}
	if withStats {
		used := "never used"
		if s.Stats.Used {
			used = fmt.Sprintf("last used %d ms ago", s.Stats.LastUsedMs)
		}
		fmt.Fprintf(&b, "\tSent %d bytes %d pkt (%s)\n", s.Stats.Bytes, s.Stats.Packets, used)
		if s.TC != nil {
			fmt.Fprintf(&b, "\tin TC: Sent %d bytes %d pkt\n", s.TC.Bytes, s.TC.Packets)
		}
	}
	return b.String()
}
