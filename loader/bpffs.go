// Package loader loads the xdpflow program for a device, pins it under
// /sys/fs/bpf/xdpflow/<netns>/<ifname>/, attaches it with a pinned bpf_link
// (so forwarding survives the process), and detaches and cleans up.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where bpffs is normally mounted.
const DefaultBPFFS = "/sys/fs/bpf"

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC
}

// ancestors returns the parent, grandparent, ... process ids.
func ancestors() []int {
	var out []int
	pid := os.Getppid()
	for i := 0; i < 64 && pid > 0; i++ {
		out = append(out, pid)
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		// "pid (comm) state ppid ...": comm may hold spaces, so cut at
		// the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			break
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			break
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return out
}

// FindBPFFS returns a bpffs directory whose pins outlive this process.
//
// Pins must live in a bpffs that stays mounted after we exit. `ip netns exec`
// runs the command in a private mount namespace with a fresh /sys, where
// /sys/fs/bpf is not a bpffs (and a bpffs mounted there would vanish with
// the namespace). There, the bpffs of the mount namespace we were started
// from is still reachable through /proc/<ancestor>/root, and the pins go
// there. When no ancestor lives in another mount namespace, this is the
// host's own and bpffs is simply not mounted yet: mount it, as systemd does
// at boot. Anything else is refused rather than reporting success for state
// that would vanish.
func FindBPFFS(override string) (string, error) {
	if override != "" {
		if !isBPFFS(override) {
			return "", fmt.Errorf("%s is not a bpffs mount", override)
		}
		return override, nil
	}
	if isBPFFS(DefaultBPFFS) {
		return DefaultBPFFS, nil
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return "", fmt.Errorf("identify mount namespace: %w", err)
	}
	elsewhere := false
	for _, pid := range ancestors() {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil || ns == self {
			continue
		}
		elsewhere = true
		if dir := fmt.Sprintf("/proc/%d/root%s", pid, DefaultBPFFS); isBPFFS(dir) {
			return dir, nil
		}
	}
	if !elsewhere && !initialPidNS() {
		// A container (its own pid namespace, so no ancestor outside
		// it is visible): a bpffs mounted here would vanish with it.
		return "", errors.New("no persistent bpffs: /sys/fs/bpf is not mounted here, and this is a container " +
			"(its own pid namespace), where a bpffs xdpflow mounted would vanish with it, rules and all; " +
			"mount the host's bpffs into it (-v /sys/fs/bpf:/sys/fs/bpf)")
	}
	if !elsewhere {
		if err := os.MkdirAll(DefaultBPFFS, 0o755); err != nil {
			return "", fmt.Errorf("create %s: %w", DefaultBPFFS, err)
		}
		if err := unix.Mount("bpf", DefaultBPFFS, "bpf", 0, "mode=0700"); err != nil {
			return "", fmt.Errorf("mount bpffs on %s: %w", DefaultBPFFS, err)
		}
		return DefaultBPFFS, nil
	}
	return "", errors.New("no persistent bpffs: /sys/fs/bpf is not mounted in this mount namespace " +
		"(inside `ip netns exec`?) nor where it was started from; mount it on the host " +
		"(mount -t bpf bpf /sys/fs/bpf), or use nsenter --net= instead of ip netns exec")
}

// procPidInitIno is the initial pid namespace's inode (PROC_PID_INIT_INO).
const procPidInitIno = 0xEFFFFFFC

// initialPidNS says whether this process is in the initial pid namespace,
// the host's: a container has a pid namespace of its own.
func initialPidNS() bool {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return false
	}
	return st.Ino == procPidInitIno
}

// NetnsID names the current network namespace: its inode number, which is
// what `ip netns identify` and /proc/PID/ns/net resolve to. The calling
// thread's, which in a Go program need not be the main thread's.
func NetnsID() (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", fmt.Errorf("identify network namespace: %w", err)
	}
	return strconv.FormatUint(st.Ino, 10), nil
}

// Paths are where one network namespace's devices are pinned.
type Paths struct {
	Root  string // <bpffs>/xdpflow/<netns>
	Netns string
}

// NewPaths finds the pin root for the current network namespace.
func NewPaths(bpffsOverride string) (Paths, error) {
	fs, err := FindBPFFS(bpffsOverride)
	if err != nil {
		return Paths{}, err
	}
	ns, err := NetnsID()
	if err != nil {
		return Paths{}, err
	}
	return Paths{Root: filepath.Join(fs, "xdpflow", ns), Netns: ns}, nil
}

// Device returns the pin directory of one device.
func (p Paths) Device(ifname string) string { return filepath.Join(p.Root, pinName(ifname)) }

// bpffs refuses names with a dot, which interface names may have (eth0.100):
// escape '%', '.' and '+' ('+' starts the names of temporary directories).
var pinEscaper = strings.NewReplacer("%", "%25", ".", "%2e", "+", "%2b")

func pinName(ifname string) string { return pinEscaper.Replace(ifname) }

func ifName(pin string) string {
	return strings.NewReplacer("%2e", ".", "%2b", "+", "%25", "%").Replace(pin)
}

// tempPrefix starts the names of directories still being filled.
const tempPrefix = "+"

// Lock serialises writers in one network namespace: flock on its pin
// directory, which it creates (root's alone: trustTree). The returned func
// releases it.
func (p Paths) Lock() (func(), error) {
	if _, err := p.trustTree(true); err != nil {
		return nil, err
	}
	return p.lock()
}

// LockIfExists is Lock for readers: it creates nothing, and where there is
// no pin tree yet it takes no lock and says so (exists false).
func (p Paths) LockIfExists() (unlock func(), exists bool, err error) {
	exists, err = p.trustTree(false)
	if err != nil || !exists {
		return func() {}, exists, err
	}
	unlock, err = p.lock()
	return unlock, err == nil, err
}

func (p Paths) lock() (func(), error) {
	for try := 0; ; try++ {
		fd, err := unix.Open(p.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", p.Root, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", p.Root, err)
		}
		// The holder before may have removed the directory it locked (the
		// last device disabled: RemoveIfEmpty): lock the one there now.
		var locked, now unix.Stat_t
		if unix.Fstat(fd, &locked) == nil && unix.Lstat(p.Root, &now) == nil && locked.Ino == now.Ino {
			return func() {
				_ = unix.Flock(fd, unix.LOCK_UN)
				unix.Close(fd)
			}, nil
		}
		unix.Close(fd)
		if try == 10 {
			return nil, fmt.Errorf("lock %s: it keeps being replaced", p.Root)
		}
		if _, err := p.trustTree(true); err != nil {
			return nil, err
		}
	}
}

// RemoveIfEmpty removes the namespace's directory when no device is
// pinned in it any more: the caller holds its lock (which a process
// waiting for it then finds stale: lock).
func (p Paths) RemoveIfEmpty() error {
	err := unix.Rmdir(p.Root)
	if err == nil || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("remove %s: %w", p.Root, err)
}
