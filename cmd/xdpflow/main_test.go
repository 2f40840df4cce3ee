package main

import (
	"strings"
	"testing"
)

// TestUsageOf: each command's usage is its own lines of the usage text,
// continuation lines included, and every command has some.
func TestUsageOf(t *testing.T) {
	for _, cmd := range commands {
		u := usageOf(cmd)
		if !strings.HasPrefix(u, "usage:\n") || !strings.Contains(u, cmd) {
			t.Errorf("%s: usage %q", cmd, u)
		}
	}
	if u := usageOf("filter"); !strings.Contains(u, "flower [MATCH...]") || strings.Contains(u, "enable") {
		t.Errorf("filter: usage %q, want its two lines only", u)
	}
	if !strings.HasPrefix(version(), "xdpflow ") {
		t.Errorf("version %q", version())
	}
}

// TestOutputOptionsAfter: -s, -j and -p after a command that only shows
// count as before it; after one that changes something they stay its own
// words, which its parser refuses.
func TestOutputOptionsAfter(t *testing.T) {
	for _, tc := range []struct {
		args, rest          string
		stats, json, pretty bool
	}{
		{"status -j", "status", false, true, false},
		{"status -s -p", "status", true, true, true},
		{"filter show dev x ingress -s -j", "filter show dev x ingress", true, true, false},
		{"filter ls dev x ingress -sj", "filter ls dev x ingress", true, true, false},
		{"flow show dev x -p", "flow show dev x", false, true, true},
		{"filter add dev x ingress -s", "filter add dev x ingress -s", false, false, false},
		{"enable dev x -j", "enable dev x -j", false, false, false},
		{"status", "status", false, false, false},
	} {
		var g globals
		rest := strings.Join(g.outputOptionsAfter(strings.Fields(tc.args)), " ")
		if rest != tc.rest || g.stats != tc.stats || g.json != tc.json || g.pretty != tc.pretty {
			t.Errorf("%q: %q stats %v json %v pretty %v, want %q %v %v %v", tc.args, rest, g.stats, g.json, g.pretty,
				tc.rest, tc.stats, tc.json, tc.pretty)
		}
	}
}
