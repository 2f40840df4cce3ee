package selftests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A container as a container runtime makes one for a Kubernetes pod, for
// the image and manifest tests: a pid and a mount namespace of its own, the
// image's root file system (read-only if asked), /proc and /sys of its
// own, the host paths it mounts, a network namespace, and only the
// capabilities it adds (bounding, permitted and effective sets, as
// containerd sets them for a root process), with no_new_privs. The test
// binary runs itself as the container's first process (sandboxEnv set),
// which sets all that up and executes the image's command.

const sandboxEnv = "XDPFLOW_SANDBOX"

type sandbox struct {
	Root     string            `json:"root"`
	ReadOnly bool              `json:"read_only"`
	Netns    string            `json:"netns"`  // a path to the network namespace
	Mounts   map[string]string `json:"mounts"` // container path: host path
	Caps     []string          `json:"caps"`   // CAP_ names without the prefix, as Kubernetes writes them
	Argv     []string          `json:"argv"`
	Env      []string          `json:"env"`
}

var capNumbers = map[string]uintptr{"NET_ADMIN": unix.CAP_NET_ADMIN, "SYS_ADMIN": unix.CAP_SYS_ADMIN, "BPF": unix.CAP_BPF,
	"PERFMON": unix.CAP_PERFMON, "SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "NET_RAW": unix.CAP_NET_RAW}

// sandboxMain is the container's first process: it never returns.
func sandboxMain(spec string) {
	var sb sandbox
	if err := json.Unmarshal([]byte(spec), &sb); err != nil {
		sandboxFail("%v", err)
	}
	// Namespaces and the exec belong to this thread.
	runtime.LockOSThread()
	fd, err := unix.Open(sb.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		sandboxFail("%v", err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		sandboxFail("setns: %v", err)
	}
	sandboxEnterRoot(sb)
	sandboxLimitCaps(sb.Caps)
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		sandboxFail("no_new_privs: %v", err)
	}
	err = syscall.Exec(sb.Argv[0], sb.Argv, sb.Env)
	sandboxFail("exec %s: %v", strings.Join(sb.Argv, " "), err)
}

// sandboxFail ends the container's first process, saying why.
func sandboxFail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "sandbox: "+format+"\n", a...)
	os.Exit(125)
}

// sandboxEnterRoot mounts the container's file system, sb.Root with /proc,
// /sys and the host paths in it (then read-only if asked), and makes it
// this process's root and working directory.
func sandboxEnterRoot(sb sandbox) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		sandboxFail("private /: %v", err)
	}
	r := sb.Root
	if err := unix.Mount(r, r, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		sandboxFail("bind %s: %v", r, err)
	}
	mkdir := func(p string) {
		if err := os.MkdirAll(filepath.Join(r, p), 0o755); err != nil {
			sandboxFail("%v", err)
		}
	}
	for _, m := range []struct{ dst, fs string }{{"proc", "proc"}, {"sys", "sysfs"}} {
		mkdir(m.dst)
		if err := unix.Mount(m.fs, filepath.Join(r, m.dst), m.fs, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			sandboxFail("mount %s: %v", m.fs, err)
		}
	}
	for dst, src := range sb.Mounts {
		mkdir(dst)
		if err := unix.Mount(src, filepath.Join(r, dst), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			sandboxFail("bind %s on %s: %v", src, dst, err)
		}
	}
	if sb.ReadOnly {
		if err := unix.Mount("", r, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			sandboxFail("read-only root: %v", err)
		}
	}
	if err := unix.Chroot(r); err != nil {
		sandboxFail("chroot: %v", err)
	}
	if err := unix.Chdir("/"); err != nil {
		sandboxFail("%v", err)
	}
}

// sandboxLimitCaps leaves this process only the capabilities caps (CAP_
// names without the prefix), in its bounding, permitted and effective sets.
func sandboxLimitCaps(caps []string) {
	var keep []uintptr
	for _, c := range caps {
		n, ok := capNumbers[c]
		if !ok {
			sandboxFail("capability %q: not one the sandbox knows", c)
		}
		keep = append(keep, n)
	}
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if !slices.Contains(keep, c) {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
				sandboxFail("drop capability %d: %v", c, err)
			}
		}
	}
	var data [2]unix.CapUserData
	for _, c := range keep {
		data[c/32].Effective |= 1 << (c % 32)
		data[c/32].Permitted |= 1 << (c % 32)
	}
	if err := unix.Capset(&unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}, &data[0]); err != nil {
		sandboxFail("capset: %v", err)
	}
}
