package loader

import (
	"strings"
	"testing"
)

// TestCheckArch: only x86-64's load ordering is relied on.
func TestCheckArch(t *testing.T) {
	if err := checkArch("x86_64"); err != nil {
		t.Errorf("x86_64 refused: %v", err)
	}
	for _, m := range []string{"aarch64", "armv7l", "riscv64", "ppc64le", "s390x"} {
		if err := checkArch(m); err == nil || !strings.Contains(err.Error(), m) {
			t.Errorf("%s: %v, want a refusal naming it", m, err)
		}
	}
}
