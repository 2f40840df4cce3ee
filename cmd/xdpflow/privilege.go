package main

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// errNeedsRoot is what every command but help says without privileges,
// rather than the first EPERM it would meet (a mkdir in bpffs, a BPF load).
var errNeedsRoot = errors.New("needs root (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN): run it as root, or with sudo")

// Capability bits (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

// privileged says whether this process may load XDP programs and change
// network devices: its effective capabilities, which a root process has
// and a non-root one may be given.
func privileged() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return os.Geteuid() == 0
		}
		has := func(c uint) bool { return eff&(1<<c) != 0 }
		return has(capNetAdmin) && (has(capBPF) || has(capSysAdmin))
	}
	return os.Geteuid() == 0
}
