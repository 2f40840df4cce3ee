package ruletext

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// ParseActions parses "action A ... [action B ...]". Each action may end in
// a tc control word; pipe (the default for vlan, skbmod and pedit) goes on
// to the next action.
func ParseActions(args []string) ([]rule.Action, error) {
	var out []rule.Action
	i := 0
	for i < len(args) {
		if args[i] != "action" && args[i] != "actions" {
			return nil, fmt.Errorf("action: unexpected %q", args[i])
		}
		i++
		if i >= len(args) {
			return nil, errors.New("action: missing action")
		}
		end := i
		for end < len(args) && args[end] != "action" && args[end] != "actions" {
			end++
		}
		acts, err := parseOne(args[i:end])
		if err != nil {
			return nil, err
		}
		out = append(out, acts...)
		i = end
	}
	if len(out) > 0 {
		for j, a := range out[:len(out)-1] {
			if a.Terminal() {
				// tc never runs actions after a drop, pass or redirect.
				out = out[:j+1]
				break
			}
		}
	}
	return out, nil
}

// control maps a tc control word to the action it amounts to, or nil for
// pipe.
func control(word string) (*rule.Action, error) {
	switch word {
	case "pipe":
		return nil, nil
	case "drop", "shot":
		return &rule.Action{Kind: rule.ActDrop}, nil
	case "pass", "ok":
		return &rule.Action{Kind: rule.ActPass}, nil
	case "continue", "reclassify", "trap", "jump", "goto":
		return nil, Unsupported("action control %q", word)
	}
	return nil, fmt.Errorf("action: unknown control %q", word)
}

func isControl(word string) bool {
	switch word {
	case "pipe", "drop", "shot", "pass", "ok", "continue", "reclassify", "trap", "jump", "goto":
		return true
	}
	return false
}

// parseOne parses one action's words (without the leading "action").
func parseOne(w []string) ([]rule.Action, error) {
	kind := w[0]
	if kind == "gact" {
		w = w[1:]
		if len(w) == 0 {
			return nil, errors.New("action gact: missing verdict")
		}
		kind = w[0]
	}
	switch kind {
	case "drop", "shot", "pass", "ok", "continue", "reclassify", "trap", "pipe":
		if len(w) > 1 {
			if w[1] == "random" {
				return nil, Unsupported("action gact random")
			}
			if w[1] == "index" {
				return nil, Unsupported("shared actions (\"index\")")
			}
			return nil, fmt.Errorf("action %s: unexpected %q", kind, w[1])
		}
		a, err := control(kind)
		if err != nil {
			return nil, err
		}
		if a == nil {
			return nil, nil
		}
		return []rule.Action{*a}, nil
	case "goto", "jump":
		return nil, Unsupported("action %s (chains are not run in XDP)", kind)
	case "mirred":
		return parseMirred(w[1:])
	case "vlan":
		return parseVlan(w[1:])
	case "skbmod":
		return parseSkbmod(w[1:])
	case "pedit":
		return parsePedit(w[1:])
	case "police", "sample", "ct", "tunnel_key", "csum", "nat", "connmark", "ctinfo", "skbedit",
		"mpls", "gate", "mirror", "simple", "ife", "xt", "ipt", "bpf":
		return nil, Unsupported("action %q", kind)
	}
	return nil, fmt.Errorf("action: unknown action %q", kind)
}

// withControl appends the action implied by a trailing control word.
func withControl(acts []rule.Action, rest []string, name string) ([]rule.Action, error) {
	if len(rest) == 0 {
		return acts, nil
	}
	if rest[0] == "index" {
		return nil, Unsupported("shared actions (\"index\")")
	}
	if len(rest) > 1 || !isControl(rest[0]) {
		return nil, fmt.Errorf("action %s: unexpected %q", name, rest[0])
	}
	c, err := control(rest[0])
	if err != nil {
		return nil, err
	}
	if c != nil {
		acts = append(acts, *c)
	}
	return acts, nil
}

func parseMirred(w []string) ([]rule.Action, error) {
	if len(w) < 4 {
		return nil, errors.New("action mirred: want \"egress redirect dev DEV\"")
	}
	dir, what := w[0], w[1]
	if w[2] != "dev" {
		return nil, fmt.Errorf("action mirred: want \"dev DEV\", got %q", w[2])
	}
	dev := w[3]
	if dir != "egress" && dir != "ingress" {
		return nil, fmt.Errorf("action mirred: unknown direction %q", dir)
	}
	if what != "redirect" && what != "mirror" {
		return nil, fmt.Errorf("action mirred: unknown mode %q", what)
	}
	if what == "mirror" {
		return nil, Unsupported("action mirred %s mirror (XDP cannot clone a packet)", dir)
	}
	if dir == "ingress" {
		return nil, Unsupported("action mirred ingress redirect (XDP cannot inject into another device's receive path)")
	}
	rest := w[4:]
	if len(rest) > 0 {
		if rest[0] == "index" {
			return nil, Unsupported("shared actions (\"index\")")
		}
		if (!isControl(rest[0]) && rest[0] != "stolen") || len(rest) > 1 {
			return nil, fmt.Errorf("action mirred: unexpected %q", rest[0])
		}
		// Only a redirect that ends the packet's way through tc (stolen,
		// tc's default, or drop) moves the packet itself; with any other
		// control word tc sends a copy and the original goes on.
		switch rest[0] {
		case "stolen", "drop", "shot":
		default:
			return nil, Unsupported("action mirred redirect followed by %q (tc sends a copy and goes on)", rest[0])
		}
	}
	return []rule.Action{{Kind: rule.ActRedirect, Dev: dev}}, nil
}

func parseVlan(w []string) ([]rule.Action, error) {
	if len(w) == 0 {
		return nil, errors.New("action vlan: want pop, push or modify")
	}
	a := rule.Action{VlanProto: rule.EthP8021Q}
	switch w[0] {
	case "pop":
		a.Kind = rule.ActVlanPop
		return withControl([]rule.Action{a}, w[1:], "vlan")
	case "push":
		// push always writes a priority (0 unless given)
		a.Kind, a.HasPrio = rule.ActVlanPush, true
	case "modify":
		a.Kind = rule.ActVlanModify
	case "pop_eth", "push_eth":
		return nil, Unsupported("action vlan %s", w[0])
	default:
		return nil, fmt.Errorf("action vlan: unknown command %q", w[0])
	}
	haveID := false
	i := 1
	for ; i+1 < len(w) && !isControl(w[i]) && w[i] != "index"; i += 2 {
		switch w[i] {
		case "id":
			id, err := strconv.ParseUint(w[i+1], 0, 16)
			if err != nil || id > 4095 {
				return nil, fmt.Errorf("action vlan: invalid id %q (0-4095)", w[i+1])
			}
			a.VlanID, haveID = uint16(id), true
		case "priority":
			p, err := strconv.ParseUint(w[i+1], 0, 8)
			if err != nil || p > 7 {
				return nil, fmt.Errorf("action vlan: invalid priority %q (0-7)", w[i+1])
			}
			a.VlanPrio, a.HasPrio = uint8(p), true
		case "protocol":
			p, err := ParseEthType(w[i+1])
			if err != nil || (p != rule.EthP8021Q && p != rule.EthP8021AD) {
				return nil, fmt.Errorf("action vlan: invalid protocol %q (802.1Q or 802.1ad)", w[i+1])
			}
			a.VlanProto = p
		default:
			return nil, fmt.Errorf("action vlan: unknown option %q", w[i])
		}
	}
	if !haveID {
		return nil, fmt.Errorf("action vlan %s: missing \"id\"", w[0])
	}
	return withControl([]rule.Action{a}, w[i:], "vlan")
}

func parseSkbmod(w []string) ([]rule.Action, error) {
	var acts []rule.Action
	i := 0
	if i < len(w) && w[i] == "set" {
		i++
	}
	for ; i+1 < len(w) && !isControl(w[i]) && w[i] != "index"; i += 2 {
		mac, err := net.ParseMAC(w[i+1])
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("action skbmod: invalid MAC %q", w[i+1])
		}
		switch w[i] {
		case "dmac":
			acts = append(acts, rule.Action{Kind: rule.ActSetEthDst, MAC: mac})
		case "smac":
			acts = append(acts, rule.Action{Kind: rule.ActSetEthSrc, MAC: mac})
		case "etype":
			return nil, Unsupported("action skbmod etype")
		default:
			return nil, fmt.Errorf("action skbmod: unknown option %q", w[i])
		}
	}
	if i < len(w) && (w[i] == "swap" || w[i] == "ecn") {
		return nil, Unsupported("action skbmod %s", w[i])
	}
	if len(acts) == 0 {
		return nil, errors.New("action skbmod: want \"set dmac MAC\" or \"set smac MAC\"")
	}
	return withControl(acts, w[i:], "skbmod")
}

// parsePedit accepts the Ethernet address rewrites: "ex munge eth dst|src set MAC".
func parsePedit(w []string) ([]rule.Action, error) {
	var acts []rule.Action
	i := 0
	if i < len(w) && w[i] == "ex" {
		i++
	}
	for i < len(w) && w[i] == "munge" {
		if i+4 >= len(w) || w[i+1] != "eth" || w[i+3] != "set" {
			return nil, Unsupported("action pedit %q (xdpflow rewrites \"munge eth dst|src set MAC\" only)",
				strings.Join(w[i:], " "))
		}
		mac, err := net.ParseMAC(w[i+4])
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("action pedit: invalid MAC %q", w[i+4])
		}
		switch w[i+2] {
		case "dst":
			acts = append(acts, rule.Action{Kind: rule.ActSetEthDst, MAC: mac})
		case "src":
			acts = append(acts, rule.Action{Kind: rule.ActSetEthSrc, MAC: mac})
		default:
			return nil, Unsupported("action pedit munge eth %s", w[i+2])
		}
		i += 5
	}
	if len(acts) == 0 {
		return nil, Unsupported("action pedit %q (xdpflow rewrites \"munge eth dst|src set MAC\" only)",
			strings.Join(w, " "))
	}
	return withControl(acts, w[i:], "pedit")
}

// FormatActions returns actions as a rule's text ends in them:
// " action A action B", or "" for none.
func FormatActions(acts []rule.Action) string {
	var b strings.Builder
	for _, a := range acts {
		b.WriteString(" action ")
		b.WriteString(FormatAction(a))
	}
	return b.String()
}

// FormatAction returns the action in tc's words (as "action ..." expects).
func FormatAction(a rule.Action) string {
	switch a.Kind {
	case rule.ActDrop:
		return "drop"
	case rule.ActPass:
		return "pass"
	case rule.ActRedirect:
		return "mirred egress redirect dev " + a.Dev
	case rule.ActVlanPop:
		return "vlan pop"
	case rule.ActVlanPush, rule.ActVlanModify:
		verb := "push"
		if a.Kind == rule.ActVlanModify {
			verb = "modify"
		}
		s := fmt.Sprintf("vlan %s id %d protocol %s", verb, a.VlanID, EthTypeName(a.VlanProto))
		if a.Kind == rule.ActVlanPush || a.HasPrio {
			s += fmt.Sprintf(" priority %d", a.VlanPrio)
		}
		return s
	case rule.ActSetEthSrc:
		return "pedit ex munge eth src set " + a.MAC.String()
	case rule.ActSetEthDst:
		return "pedit ex munge eth dst set " + a.MAC.String()
	}
	return fmt.Sprintf("unknown(%d)", a.Kind)
}
