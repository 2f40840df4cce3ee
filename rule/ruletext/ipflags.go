package ruletext

import (
	"fmt"
	"strings"

	"github.com/xdpflow/xdpflow/rule"
)

// parseIPFlags parses flower's ip_flags: frag, nofrag, firstfrag, nofirstfrag
// joined by "/".
func parseIPFlags(s string) (val, mask uint8, err error) {
	for _, f := range strings.Split(s, "/") {
		var bit uint8
		set := true
		switch f {
		case "frag":
			bit = rule.FragIsFragment
		case "nofrag":
			bit, set = rule.FragIsFragment, false
		case "firstfrag":
			bit = rule.FragFirst
		case "nofirstfrag":
			bit, set = rule.FragFirst, false
		default:
			return 0, 0, fmt.Errorf("flower: invalid ip_flags %q (frag, nofrag, firstfrag, nofirstfrag)", f)
		}
		if mask&bit != 0 {
			return 0, 0, fmt.Errorf("flower: ip_flags %q names a flag twice", s)
		}
		mask |= bit
		if set {
			val |= bit
		}
	}
	return val, mask, nil
}

// FormatIPFlags spells fragment flags (rule.FragIsFragment, FragFirst)
// under a mask as ip_flags does: "frag/nofirstfrag".
func FormatIPFlags(val, mask uint8) string {
	var parts []string
	if mask&rule.FragIsFragment != 0 {
		if val&rule.FragIsFragment != 0 {
			parts = append(parts, "frag")
		} else {
			parts = append(parts, "nofrag")
		}
	}
	if mask&rule.FragFirst != 0 {
		if val&rule.FragFirst != 0 {
			parts = append(parts, "firstfrag")
		} else {
			parts = append(parts, "nofirstfrag")
		}
	}
	return strings.Join(parts, "/")
}
