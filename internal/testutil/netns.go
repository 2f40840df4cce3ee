// Package testutil creates throw-away network namespaces, veth pairs and
// packets for tests. Everything it creates is removed by t.Cleanup.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRoot skips a test that needs root (BPF programs, network
// namespaces) when it cannot have it: not root, or -short (make check's
// unprivileged run). Where every test must run (XDPFLOW_ALL_TESTS=1, as
// make test sets it), it fails instead: a skipped test must not pass for a
// tested one.
func RequireRoot(t testing.TB) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "not root"
	case testing.Short():
		why = "-short"
	default:
		return
	}
	if os.Getenv("XDPFLOW_ALL_TESTS") == "1" {
		t.Fatalf("this test needs root (BPF programs, network namespaces), and XDPFLOW_ALL_TESTS=1 asks for every test: %s", why)
	}
	t.Skipf("SKIPPED (%s): this test needs root, BPF programs and network namespaces; make test runs it", why)
}

// Netns is a named network namespace (/run/netns/NAME).
type Netns struct {
	Name   string
	Handle netns.NsHandle
	Ino    uint64 // the namespace's inode: xdpflow's pins live under /sys/fs/bpf/xdpflow/<Ino>
}

// NewNetns creates a network namespace removed at cleanup.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	RequireRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "xft-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	ns := &Netns{Name: name, Handle: h}
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		t.Fatalf("stat netns %s: %v", name, err)
	}
	ns.Ino = st.Ino
	t.Cleanup(func() {
		h.Close()
		_ = exec.Command("ip", "netns", "del", name).Run()
		// Pins xdpflow left for this namespace would outlive it (and keep
		// their maps): remove them with it.
		_ = os.RemoveAll(filepath.Join("/sys/fs/bpf/xdpflow", strconv.FormatUint(st.Ino, 10)))
	})
	ns.Run(t, func() {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			_ = netlink.LinkSetUp(lo)
		}
	})
	return ns
}

// Run calls f on an OS thread switched into the namespace.
func (ns *Netns) Run(t testing.TB, f func()) {
	t.Helper()
	done := make(chan struct{})
	var failure any
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread stays locked and dies with the goroutine, so it
		// never serves another goroutine from inside the namespace.
		orig, err := netns.Get()
		if err != nil {
			failure = err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.Handle); err != nil {
			failure = err
			return
		}
		defer func() {
			if r := recover(); r != nil {
				failure = r
			}
		}()
		f()
	}()
	<-done
	if failure != nil {
		t.Fatalf("in netns %s: %v", ns.Name, failure)
	}
}

// Exec runs a command inside the namespace with `ip netns exec` and returns
// its combined output.
func (ns *Netns) Exec(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// ExecStdin is Exec with stdin (for `nft -f -`).
func (ns *Netns) ExecStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// MustExec is Exec that fails the test on error.
func (ns *Netns) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Exec(args...)
	if err != nil {
		t.Fatalf("%s in %s: %v: %s", strings.Join(args, " "), ns.Name, err, out)
	}
	return out
}

// Veth creates a veth pair nameA (in a) <-> nameB (in b), both up.
func Veth(t testing.TB, a *Netns, nameA string, b *Netns, nameB string) {
	t.Helper()
	out, err := exec.Command("ip", "link", "add", nameA, "netns", a.Name, "type", "veth",
		"peer", "name", nameB, "netns", b.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("create veth %s/%s: %v: %s", nameA, nameB, err, out)
	}
	a.MustExec(t, "ip", "link", "set", nameA, "up")
	b.MustExec(t, "ip", "link", "set", nameB, "up")
	// VLAN tags stay in the frame, where XDP sees them: with TX VLAN
	// offload on (a veth's default) xdpflow punts every rule of the
	// receiving end (loader.CheckVLANVisible).
	a.MustExec(t, "ethtool", "-K", nameA, "txvlan", "off", "tx-vlan-stag-hw-insert", "off")
	b.MustExec(t, "ethtool", "-K", nameB, "txvlan", "off", "tx-vlan-stag-hw-insert", "off")
}

// VethVLANOffload turns dev's TX VLAN offload back on, a veth's default.
func VethVLANOffload(t testing.TB, ns *Netns, dev string) {
	t.Helper()
	ns.MustExec(t, "ethtool", "-K", dev, "txvlan", "on")
}
