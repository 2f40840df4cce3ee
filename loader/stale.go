package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A namespace's pins outlive it: deleting a network namespace destroys
// its devices, and their programs detach, but nothing removes the pins
// (program, link, maps: 32 MB of flows for `flows 1000000`), and a later
// namespace may get the same inode number. Stale ones are found by the
// namespaces still alive and removed.

var netnsRef = regexp.MustCompile(`net:\[(\d+)\]`)

// liveNetns lists the inode numbers of the network namespaces something
// still holds: a process's, a file descriptor open on one, or a bind
// mount (ip netns add, container runtimes) in this mount namespace.
func liveNetns() map[uint64]bool {
	live := map[uint64]bool{}
	add := func(s string) {
		for _, m := range netnsRef.FindAllStringSubmatch(s, -1) {
			if ino, err := strconv.ParseUint(m[1], 10, 64); err == nil {
				live[ino] = true
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		// Every thread's namespace (the leader's among them): a thread
		// may have entered one of its own with setns.
		dir := filepath.Join("/proc", p.Name())
		tasks, _ := os.ReadDir(filepath.Join(dir, "task"))
		for _, th := range tasks {
			l, _ := os.Readlink(filepath.Join(dir, "task", th.Name(), "ns/net"))
			add(l)
		}
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			l, _ := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if strings.HasPrefix(l, "net:") {
				add(l)
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		add(string(b))
	}
	return live
}

// StaleNamespaces lists the namespaces under <bpffs>/xdpflow whose pins
// nothing alive is behind: no live network namespace has the inode, and
// no device of theirs has its program attached. Only the host's pid
// namespace sees every process, so only there is anything stale.
func StaleNamespaces(p Paths) ([]string, error) {
	if !initialPidNS() {
		// A container sees only its own processes: every namespace
		// would look unused.
		return nil, nil
	}
	top := filepath.Dir(p.Root)
	if ok, err := trustDir(top, false); err != nil || !ok {
		return nil, err
	}
	ents, err := os.ReadDir(top)
	if err != nil {
		return nil, err
	}
	var live map[uint64]bool
	var out []string
	for _, e := range ents {
		ino, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || !e.IsDir() || e.Name() == p.Netns {
			continue
		}
		if live == nil {
			live = liveNetns()
		}
		if live[ino] {
			continue
		}
		other := Paths{Root: filepath.Join(top, e.Name()), Netns: e.Name()}
		devs, err := List(other)
		if err != nil {
			continue // not ours to judge
		}
		attached := false
		for _, dev := range devs {
			if d, err := Open(other, dev); err == nil {
				attached = attached || d.attachedTo() != 0
				d.Close()
			}
		}
		if !attached {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// RemoveStaleNamespace removes the pins of a namespace StaleNamespaces
// found, under that namespace's lock, and says how many devices it held.
func RemoveStaleNamespace(p Paths, netns string) (int, error) {
	other := Paths{Root: filepath.Join(filepath.Dir(p.Root), netns), Netns: netns}
	unlock, exists, err := other.LockIfExists()
	if err != nil || !exists {
		return 0, err
	}
	defer unlock()
	devs, err := List(other)
	if err != nil {
		return 0, err
	}
	for _, dev := range devs {
		if err := removePins(other.Device(dev)); err != nil {
			return 0, fmt.Errorf("network namespace %s: %w", netns, err)
		}
	}
	// Half-made directories of an enable that died with it.
	ents, _ := os.ReadDir(other.Root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			_ = removePins(filepath.Join(other.Root, e.Name()))
		}
	}
	if err := unix.Rmdir(other.Root); err != nil && !errors.Is(err, unix.ENOENT) {
		return len(devs), fmt.Errorf("remove %s: %w", other.Root, err)
	}
	return len(devs), nil
}
