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
