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

	"github.com/xdpflow/xdpflow/bpf"
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
	type move struct {
		from, tmp, to string // pin directory names
		ifindex       int
	}
	// The devices' names now, in one dump: a device still called what its
	// pins are called, with the ifindex its program was attached to, has
	// not moved, which the meta pin alone says (opening all of a device's
	// pins, as Open does, is ~15 syscalls, and every command comes here).
	ifindexOf := map[string]int{}
	links, lerr := netlink.LinkList()
	for _, l := range links {
		ifindexOf[l.Attrs().Name] = l.Attrs().Index
	}
	var moves []move
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		name := e.Name()
		var ifindex int
		switch {
		case strings.HasPrefix(name, renamePrefix):
			// Left between the two moves: finish it.
			n, err := strconv.Atoi(strings.TrimPrefix(name, renamePrefix))
			if err != nil {
				continue
			}
			ifindex = n
		case strings.HasPrefix(name, tempPrefix):
			continue // an enable still filling its directory
		default:
			if idx, ok := ifindexOf[ifName(name)]; ok && lerr == nil && pinnedIfindex(filepath.Join(p.Root, name)) == idx {
				continue
			}
			d, err := Open(p, ifName(name))
			if err != nil {
				continue // half-written or stale: Enable and Disable deal with it
			}
			ifindex = d.attachedTo()
			d.Close()
			if ifindex == 0 {
				continue // not attached (the device went away): stale
			}
		}
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			continue
		}
		to := pinName(l.Attrs().Name)
		if to != name {
			moves = append(moves, move{from: name, tmp: renamePrefix + strconv.Itoa(ifindex), to: to, ifindex: ifindex})
		}
	}
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
					return nil, fmt.Errorf("follow rename of ifindex %d to %s: %s holds the pins of ifindex %d",
						m.ifindex, ifName(m.to), ifName(m.to), attached)
				}
			}
			if err := removePins(dst); err != nil {
				return nil, fmt.Errorf("follow rename to %s: clear stale pins: %w", ifName(m.to), err)
			}
		}
		if err := os.Rename(filepath.Join(p.Root, m.tmp), dst); err != nil {
			return nil, fmt.Errorf("follow rename of ifindex %d to %s: %w", m.ifindex, ifName(m.to), err)
		}
		from := m.from
		if strings.HasPrefix(from, renamePrefix) {
			from = "" // the old name was lost with the process that died
		}
		renamed[ifName(from)] = ifName(m.to)
	}
	return renamed, nil
}

// pinnedIfindex is the ifindex recorded in the meta pin of a device
// directory at enable (0 if it cannot be read).
func pinnedIfindex(dir string) int {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.XdpflowMapMeta), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0
	}
	defer m.Close()
	var meta bpf.XdpflowXfMeta
	if err := m.Lookup(uint32(0), &meta); err != nil {
		return 0
	}
	return int(meta.Ifindex)
}
