package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrUntrustedTree is pinned state in a place xdpflow cannot trust: a
// bpffs is often world-writable (mode 1777), and anyone could have made a
// directory or link there before root did, with what they like in it.
var ErrUntrustedTree = errors.New("untrusted pin tree")

// trustDir checks that dir (whose parent is trusted) is a directory, not
// a link, owned by this user and open to it alone; with create, it makes
// it first if absent. A directory of this user's with a wider mode is
// narrowed to 0700; anything else is refused, naming the fix. It says
// whether dir exists.
func trustDir(dir string, create bool) (bool, error) {
	if create {
		if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
				return false, fmt.Errorf("create %s: %w (xdpflow needs root: CAP_BPF and CAP_NET_ADMIN)", dir, err)
			}
			return false, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) && !create {
			return false, nil
		}
		return false, fmt.Errorf("%s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return false, fmt.Errorf("%w: %s is a symbolic link; remove it (rm %s)", ErrUntrustedTree, dir, dir)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return false, fmt.Errorf("%w: %s is not a directory; remove it", ErrUntrustedTree, dir)
	case int(st.Uid) != os.Geteuid():
		return false, fmt.Errorf("%w: %s is owned by uid %d, not by uid %d: someone else made it, and may have put anything in it; "+
			"remove it (rm -r %s) once you know what it holds", ErrUntrustedTree, dir, st.Uid, os.Geteuid(), dir)
	case st.Mode&0o7777 != 0o700:
		// Ours, and no link (just checked); its parent is trusted, or a
		// sticky bpffs where nobody else may replace it.
		if err := unix.Chmod(dir, 0o700); err != nil {
			return true, fmt.Errorf("%s: narrow its mode %#o to 0700: %w", dir, st.Mode&0o7777, err)
		}
	}
	return true, nil
}

// trustTree checks <bpffs>/xdpflow and its network namespace's directory
// (trustDir), creating them with create. It says whether both exist.
func (p Paths) trustTree(create bool) (bool, error) {
	for _, dir := range []string{filepath.Dir(p.Root), p.Root} {
		ok, err := trustDir(dir, create)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// trustDeviceDir checks one device's pin directory as trustDir does,
// without creating it.
func trustDeviceDir(dir string) (bool, error) { return trustDir(dir, false) }
