// Package flower speaks TC flower: it parses tc's filter command line
// into rule.Rule, installs rules as kernel filters and reads kernel
// filters back (with a kernel that has cls_flower), and mirrors a
// device's filters into XDP. A rule's own text (its match keys and
// actions) is package ruletext's; the words and their meaning are tc's.
package flower

import (
	"errors"
	"fmt"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// Command is a parsed `filter` command line (everything after "filter").
type Command struct {
	Verb string // add, replace, change, del, show
	Dev  string
	ruletext.Head
	// Rule is set for add, replace and change: the flower match and actions.
	Rule *rule.Rule
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
	c := &Command{Verb: verb}
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
		if rest[0] != "flower" {
			return nil, fmt.Errorf("filter: expected \"flower\", got %q", rest[0])
		}
		c.Rule = c.Head.Rule(c.Dev)
		if err := ruletext.ParseTypedFlower(rest[1:], c.Rule); err != nil {
			return nil, err
		}
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
		n, err := c.Head.ParseOption(args[i:])
		if err != nil {
			return nil, err
		}
		if n > 0 {
			i += n - 1
			continue
		}
		switch a := args[i]; a {
		case "dev", "parent":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("filter: %q needs a value", a)
			}
			i++
			if a == "dev" {
				c.Dev = args[i]
			} else if v := args[i]; v != "ffff:" && v != "ffff:fff2" && v != "ffff:0" {
				return nil, ruletext.Unsupported("filter: parent %s (xdpflow runs the ingress/clsact ingress block only)", v)
			}
		case "ingress":
		case "egress":
			return nil, ruletext.Unsupported("filter: egress (xdpflow runs ingress filters only)")
		case "root":
			return nil, ruletext.Unsupported("filter: root (xdpflow runs ingress filters only)")
		case "flower":
			return args[i:], nil
		case "u32", "bpf", "matchall", "basic", "fw", "route", "flow", "cgroup", "tcindex":
			return nil, ruletext.Unsupported("filter: classifier %q (xdpflow runs flower)", a)
		default:
			return nil, fmt.Errorf("filter: unknown option %q", a)
		}
	}
	return nil, nil
}
