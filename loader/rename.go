package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xdpflow/xdpflow/maps"
)

// renamePrefix names a pin directory between its two moves (FollowRenames):
// temporary (List skips it), and it says which ifindex it belongs to, so a
// process that died between the moves leaves nothing another cannot finish.
const renamePrefix = tempPrefix + "rename-"

// FollowRenames moves the pins of every enabled device that was renamed
// to the device's current name, and returns old name -> new name. Pins
// are found by name, the device they serve by the ifindex its program is
// attached to; a renamed device keeps its program, link and rules, and
// only its directory moves. Names may have been swapped or rotated among
// enabled devices, so every move goes through a temporary name first. The
// caller holds the namespace lock.
func FollowRenames(p Paths) (map[string]string, error) {
	ents, err := os.ReadDir(p.Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	moves := renameMoves(p, ents)
	if len(moves) == 0 {
		return nil, nil
	}
	for _, m := range moves {
		if m.from == m.tmp {
			continue
		}
		if err := os.Rename(filepath.Join(p.Root, m.from), filepath.Join(p.Root, m.tmp)); err != nil {
			return nil, fmt.Errorf("follow rename of %s: %w", ifName(m.from), err)
		}
	}
	renamed := map[string]string{}
	for _, m := range moves {
		if err := m.finish(p); err != nil {
			return nil, err
		}
		from := m.from
		if strings.HasPrefix(from, renamePrefix) {
			from = "" // the old name was lost with the process that died
		}
		renamed[ifName(from)] = ifName(m.to)
	}
	return renamed, nil
}

// renameMove is one pin directory's move, by pin directory names.
type renameMove struct {
	from, tmp, to string
	ifindex       int
}

// renameMoves lists the moves of the pin directories in ents whose
// device is now called otherwise.
func renameMoves(p Paths, ents []os.DirEntry) []renameMove {
	// The devices' names now, in one dump: a device still called what its
	// pins are called, with the ifindex its program was attached to, has
	// not moved, which the meta pin alone says (opening all of a device's
	// pins, as Open does, is ~15 syscalls, and every command comes here).
	ifindexOf := map[string]int{}
	links, lerr := netlink.LinkList()
	for _, l := range links {
		ifindexOf[l.Attrs().Name] = l.Attrs().Index
	}
	var moves []renameMove
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		name := e.Name()
		ifindex := pinsIfindex(p, name, ifindexOf, lerr == nil)
		if ifindex == 0 {
			continue
		}
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			continue
		}
		to := pinName(l.Attrs().Name)
		if to != name {
			moves = append(moves, renameMove{from: name, tmp: renamePrefix + strconv.Itoa(ifindex), to: to, ifindex: ifindex})
		}
	}
	return moves
}

// pinsIfindex is the ifindex of the device whose pins are in directory
// name, when they may have to move; 0 for the pins of a device that kept
// its name (in ifindexOf, if listed), an enable's temporary directory and
// stale pins.
func pinsIfindex(p Paths, name string, ifindexOf map[string]int, listed bool) int {
	switch {
	case strings.HasPrefix(name, renamePrefix):
		// Left between the two moves: finish it.
		n, err := strconv.Atoi(strings.TrimPrefix(name, renamePrefix))
		if err != nil {
			return 0
		}
		return n
	case strings.HasPrefix(name, tempPrefix):
		return 0 // an enable still filling its directory
	}
	if idx, ok := ifindexOf[ifName(name)]; ok && listed && pinnedIfindex(filepath.Join(p.Root, name)) == idx {
		return 0
	}
	d, err := Open(p, ifName(name))
	if err != nil {
		return 0 // half-written or stale: Enable and Disable deal with it
	}
	ifindex := d.attachedTo()
	d.Close()
	return ifindex // 0 when not attached (the device went away): stale
}

// finish moves the pins from their temporary name to the new one.
func (m renameMove) finish(p Paths) error {
	dst := filepath.Join(p.Root, m.to)
	if _, err := os.Stat(dst); err == nil {
		// Pins under the new name that no moved device owns: a device
		// of that name that went away (stale, not attached), or one
		// whose ifindex the kernel reports under another name. Only
		// stale pins are removed.
		if d, err := Open(p, ifName(m.to)); err == nil {
			attached := d.attachedTo()
			d.Close()
			if attached != 0 {
				return fmt.Errorf("follow rename of ifindex %d to %s: %s holds the pins of ifindex %d",
					m.ifindex, ifName(m.to), ifName(m.to), attached)
			}
		}
		if err := removePins(dst); err != nil {
			return fmt.Errorf("follow rename to %s: clear stale pins: %w", ifName(m.to), err)
		}
	}
	if err := os.Rename(filepath.Join(p.Root, m.tmp), dst); err != nil {
		return fmt.Errorf("follow rename of ifindex %d to %s: %w", m.ifindex, ifName(m.to), err)
	}
	return nil
}

// pinnedIfindex is the ifindex recorded in the meta pin of a device
// directory at enable (0 if it cannot be read).
func pinnedIfindex(dir string) int {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, maps.MetaMapName), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0
	}
	defer m.Close()
	a, err := maps.ReadAttachment(m)
	if err != nil {
		return 0
	}
	return a.Ifindex
}
