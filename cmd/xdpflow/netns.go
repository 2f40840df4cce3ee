package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
)

// inNetns runs the command in a named network namespace when the global
// options name one (-n NETNS, as ip and tc take it): it execs `ip netns
// exec NETNS` with this binary and the other arguments, and returns only
// on failure. A Go process cannot move all its threads into a namespace,
// so the one it execs starts there; pins go where `ip netns exec` sends
// them (loader.FindBPFFS).
func inNetns(args []string) error {
	i := 0
	for i < len(args) && len(args[i]) > 0 && args[i][0] == '-' {
		switch args[i] {
		case "-n", "-netns", "--netns":
			if i+1 >= len(args) {
				return fmt.Errorf("-n needs a network namespace's name (ip netns list)")
			}
			name := args[i+1]
			if _, err := os.Stat("/run/netns/" + name); err != nil {
				return fmt.Errorf("network namespace %q: %v (ip netns list names them)", name, err)
			}
			ip, err := exec.LookPath("ip")
			if err != nil {
				return fmt.Errorf("-n needs iproute2's ip: %v", err)
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			rest := slices.Concat(args[:i], args[i+2:])
			argv := append([]string{"ip", "netns", "exec", name, self}, rest...)
			return syscall.Exec(ip, argv, os.Environ())
		case "--bpffs":
			i += 2
			continue
		}
		i++
	}
	return nil
}
