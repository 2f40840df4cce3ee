package ruletext

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/xdpflow/xdpflow/rule"
)

// ErrUnsupported marks valid tc that xdpflow cannot run exactly.
var ErrUnsupported = errors.New("not supported by xdpflow")

// Unsupported is an error, wrapping ErrUnsupported, that names what
// xdpflow cannot run.
func Unsupported(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrUnsupported)
}

// Parse parses the canonical text Format produces into a rule of dev.
func Parse(dev, text string) (*rule.Rule, error) {
	words := strings.Fields(text)
	var h Head
	i := 0
	for i < len(words) && words[i] != "flower" {
		n, err := h.ParseOption(words[i:])
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("filter: unknown option %q", words[i])
		}
		i += n
	}
	if i == len(words) {
		return nil, fmt.Errorf("rule text %q: no flower", text)
	}
	r := h.Rule(dev)
	if err := ParseFlower(words[i+1:], r); err != nil {
		return nil, err
	}
	return r, nil
}

// Head is what the words before "flower" say of a filter: its pref,
// handle, protocol and chain, and which of them were given.
type Head struct {
	Prio        uint16
	PrioSet     bool
	Handle      uint32
	HandleSet   bool
	Protocol    uint16
	ProtocolSet bool
	Chain       uint32
	ChainSet    bool
}

// ParseOption reads the option args starts with when it is one of Head's
// (pref, handle, protocol, chain, each with its value) and returns how
// many words it took: 0 for any other word.
func (h *Head) ParseOption(args []string) (int, error) {
	a := args[0]
	switch a {
	case "pref", "prio", "priority", "handle", "protocol", "chain":
	default:
		return 0, nil
	}
	if len(args) < 2 {
		return 0, fmt.Errorf("filter: %q needs a value", a)
	}
	v := args[1]
	switch a {
	case "pref", "prio", "priority":
		p, err := strconv.ParseUint(v, 0, 16)
		if err != nil {
			return 0, fmt.Errorf("filter: invalid pref %q", v)
		}
		h.Prio, h.PrioSet = uint16(p), true
	case "handle":
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("filter: invalid handle %q", v)
		}
		h.Handle, h.HandleSet = uint32(n), true
	case "protocol":
		p, err := ParseEthType(v)
		if err != nil {
			return 0, fmt.Errorf("filter: invalid protocol %q", v)
		}
		h.Protocol, h.ProtocolSet = p, true
	case "chain":
		ch, err := strconv.ParseUint(v, 0, 32)
		if err != nil {
			return 0, fmt.Errorf("filter: invalid chain %q", v)
		}
		h.Chain, h.ChainSet = uint32(ch), true
		if ch != 0 {
			return 0, Unsupported("filter: chain %d (xdpflow runs chain 0 only)", ch)
		}
	}
	return 2, nil
}

// Rule is a rule of dev with what the head says; its protocol is all
// unless one was given. The match comes from ParseFlower.
func (h *Head) Rule(dev string) *rule.Rule {
	r := &rule.Rule{Dev: dev, Prio: h.Prio, Handle: h.Handle, Chain: h.Chain, Protocol: rule.EthPAll}
	if h.ProtocolSet {
		r.Protocol = h.Protocol
	}
	return r
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
