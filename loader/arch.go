package loader

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkArch refuses machines whose CPUs may reorder loads with loads. The
// program reads a change's pieces (the cache generation, the subtable
// list, the flows) with plain loads, and the order of table updates
// guarantees a coherent answer only where those loads are not reordered
// among themselves: x86-64 (TSO). arm64 and the others would need
// acquire loads in the program or a grace period per change, which
// xdpflow does not have; until then it refuses to run there rather than
// risk a packet's fate.
func checkArch(machine string) error {
	if machine == "x86_64" {
		return nil
	}
	return fmt.Errorf("xdpflow runs on x86-64 only: its lock-free table updates rely on x86's ordering of loads, and this machine is %s", machine)
}

func machine() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Machine[:])
}
