package selftests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// worldBPFFS mounts a bpffs of the test's own, world-writable and sticky
// as a fresh bpffs often is (mode 1777), and returns where.
func worldBPFFS(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	// Reachable by others, as /sys/fs/bpf is (t.TempDir's parent is 0700).
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=1777"); err != nil {
		t.Fatalf("mount a bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// asNobody runs a command as uid and gid 65534.
func asNobody(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("setpriv", append([]string{"--reuid", "65534", "--regid", "65534", "--clear-groups"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v: %v: %s", args, err, out)
	}
}

// One subtest per attack, kept together: they share the namespace and b0.
// TestPinTreeAttacks: an unprivileged user who gets to a world-writable
// bpffs first cannot have root use what they made, nor have root delete
// files through a link; the tree xdpflow makes is root's alone.
func TestPinTreeAttacks(t *testing.T) {
	ns := testutil.NewNetns(t)
	peer := testutil.NewNetns(t)
	testutil.Veth(t, ns, "b0", peer, "a0")
	run := func(fs string, args ...string) (string, error) {
		return ns.Exec(append([]string{xdpflowBin, "--bpffs", fs}, args...)...)
	}
	inode := func() string {
		var ino string
		ns.Run(t, func() {
			var st unix.Stat_t
			if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
				t.Fatal(err)
			}
			ino = strconv.FormatUint(st.Ino, 10)
		})
		return ino
	}()

	t.Run("foreign directory", func(t *testing.T) {
		fs := worldBPFFS(t)
		asNobody(t, "mkdir", "-m", "0777", filepath.Join(fs, "xdpflow"))
		out, err := run(fs, "enable", "dev", "b0")
		if err == nil || !strings.Contains(out, "owned by uid 65534") {
			t.Fatalf("enable in a tree nobody made: %v: %s", err, out)
		}
		if ents, _ := os.ReadDir(filepath.Join(fs, "xdpflow")); len(ents) != 0 {
			t.Fatalf("root put %d entries in a directory nobody owns", len(ents))
		}
	})

	t.Run("foreign link", func(t *testing.T) {
		fs := worldBPFFS(t)
		theirs := filepath.Join(fs, "theirs")
		asNobody(t, "mkdir", theirs)
		asNobody(t, "ln", "-s", theirs, filepath.Join(fs, "xdpflow"))
		out, err := run(fs, "enable", "dev", "b0")
		if err == nil || !strings.Contains(out, "symbolic link") {
			t.Fatalf("enable through a link nobody made: %v: %s", err, out)
		}
		if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
			t.Fatalf("root put %d entries behind a link nobody made", len(ents))
		}
	})

	t.Run("wide mode narrowed", func(t *testing.T) {
		fs := worldBPFFS(t)
		if err := os.Mkdir(filepath.Join(fs, "xdpflow"), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(fs, "xdpflow"), 0o777); err != nil {
			t.Fatal(err)
		}
		if out, err := run(fs, "enable", "dev", "b0"); err != nil {
			t.Fatalf("enable: %v: %s", err, out)
		}
		for _, dir := range []string{filepath.Join(fs, "xdpflow"), filepath.Join(fs, "xdpflow", inode)} {
			var st unix.Stat_t
			if err := unix.Lstat(dir, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o7777 != 0o700 || st.Uid != 0 {
				t.Errorf("%s: mode %#o uid %d, want 0700 root's", dir, st.Mode&0o7777, st.Uid)
			}
		}
		if out, err := run(fs, "disable", "dev", "b0"); err != nil {
			t.Fatalf("disable: %v: %s", err, out)
		}
		if _, err := os.Lstat(filepath.Join(fs, "xdpflow", inode)); !os.IsNotExist(err) {
			t.Errorf("disable of the last device left the namespace's directory (%v)", err)
		}
	})

	t.Run("disable follows no link", func(t *testing.T) {
		fs := worldBPFFS(t)
		if out, err := run(fs, "enable", "dev", "b0"); err != nil {
			t.Fatalf("enable: %v: %s", err, out)
		}
		victim := t.TempDir()
		for _, f := range []string{"prog", "link", "meta", "flows"} {
			if err := os.WriteFile(filepath.Join(victim, f), []byte("root's"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(victim, filepath.Join(fs, "xdpflow", inode, "b9")); err != nil {
			t.Fatal(err)
		}
		out, err := run(fs, "disable", "dev", "b9")
		if err == nil || !strings.Contains(out, "symbolic link") {
			t.Errorf("disable of a device directory that is a link: %v: %s", err, out)
		}
		if ents, _ := os.ReadDir(victim); len(ents) != 4 {
			t.Fatalf("disable deleted files behind a link: %d of 4 left", len(ents))
		}
		if out, err := run(fs, "disable", "dev", "b0"); err != nil {
			t.Fatalf("disable: %v: %s", err, out)
		}
	})

	t.Run("status creates nothing", func(t *testing.T) {
		fs := worldBPFFS(t)
		if out, err := run(fs, "status"); err != nil {
			t.Fatalf("status: %v: %s", err, out)
		}
		if _, err := os.Lstat(filepath.Join(fs, "xdpflow")); !os.IsNotExist(err) {
			t.Fatalf("status created %s (%v)", filepath.Join(fs, "xdpflow"), err)
		}
	})

	t.Run("not root", func(t *testing.T) {
		out, err := exec.Command("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", xdpflowBin, "status").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "needs root") {
			t.Fatalf("status as nobody: %v: %s", err, out)
		}
	})
}

// TestContainerWithoutBPFFS: in a container (its own mount and pid
// namespaces) without the host's bpffs, enable refuses, naming the fix,
// instead of mounting a bpffs that would vanish with the container, rules
// and all (it used to, and said it had succeeded).
func TestContainerWithoutBPFFS(t *testing.T) {
	testutil.RequireRoot(t)
	script := `umount /sys/fs/bpf 2>/dev/null; ip link set lo up; "$0" enable dev lo; echo "rc=$?"; mountpoint -q /sys/fs/bpf && echo "bpffs mounted"; true`
	out, err := exec.Command("unshare", "--mount", "--pid", "--net", "--fork", "--mount-proc", "sh", "-c", script, xdpflowBin).CombinedOutput()
	if err != nil {
		t.Fatalf("unshare: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "rc=1") || !strings.Contains(string(out), "container") ||
		!strings.Contains(string(out), "-v /sys/fs/bpf:/sys/fs/bpf") || strings.Contains(string(out), "bpffs mounted") {
		t.Fatalf("enable in a container without bpffs: %s", out)
	}
}

// TestStaleNamespacePins: the pins of a network namespace deleted while
// xdpflow was enabled in it are found and removed by the next status (or
// enable, or daemon), which says so; a live namespace's are kept.
func TestStaleNamespacePins(t *testing.T) {
	fs := worldBPFFS(t)
	name := "xfstale-" + strconv.Itoa(os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", name)
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	})
	ip("-n", name, "link", "add", "s0", "type", "veth", "peer", "name", "s1")
	ip("-n", name, "link", "set", "s0", "up")
	ip("-n", name, "link", "set", "s1", "up")
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(fs, "xdpflow", strconv.FormatUint(st.Ino, 10))
	if out, err := exec.Command("ip", "netns", "exec", name, xdpflowBin, "--bpffs", fs, "enable", "dev", "s0").CombinedOutput(); err != nil {
		t.Fatalf("enable: %v: %s", err, out)
	}

	live := testutil.NewNetns(t)
	testutil.Veth(t, live, "l0", live, "l1")
	if out, err := live.Exec(xdpflowBin, "--bpffs", fs, "enable", "dev", "l0"); err != nil {
		t.Fatalf("enable: %v: %s", err, out)
	}
	if out, err := live.Exec(xdpflowBin, "--bpffs", fs, "status"); err != nil || strings.Contains(out, "is gone") {
		t.Fatalf("status while both namespaces live: %v: %s", err, out)
	}
	if _, err := os.Lstat(gone); err != nil {
		t.Fatalf("a live namespace's pins were removed: %v", err)
	}

	ip("netns", "del", name)
	deleted = true
	waitFor(t, 10*time.Second, "the deleted namespace's pins removed by status", func() string {
		out, _ := live.Exec(xdpflowBin, "--bpffs", fs, "status")
		return out
	}, func(out string) bool { return strings.Contains(out, "is gone: removed the pins of its 1 device(s)") })
	if _, err := os.Lstat(gone); !os.IsNotExist(err) {
		t.Fatalf("%s still there (%v)", gone, err)
	}
	if out, err := live.Exec(xdpflowBin, "--bpffs", fs, "status"); err != nil || !strings.Contains(out, "l0 (ifindex") {
		t.Fatalf("the live namespace's device after the cleanup: %v: %s", err, out)
	}
	if out, err := live.Exec(xdpflowBin, "--bpffs", fs, "disable", "dev", "l0"); err != nil {
		t.Fatalf("disable: %v: %s", err, out)
	}
}
