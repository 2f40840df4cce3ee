package testutil

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// OnOneCPU keeps the calling goroutine on its thread and the thread on one
// CPU until the returned func (to defer) undoes both: per-CPU state such
// as the flow cache then sees every run of a check.
func OnOneCPU(t testing.TB) (restore func()) {
	t.Helper()
	runtime.LockOSThread()
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("read CPU affinity: %v", err)
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if !was.IsSet(cpu) {
			continue
		}
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			runtime.UnlockOSThread()
			t.Fatalf("pin to CPU %d: %v", cpu, err)
		}
		break
	}
	return func() {
		_ = unix.SchedSetaffinity(0, &was)
		runtime.UnlockOSThread()
	}
}
