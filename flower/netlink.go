package flower

import (
	"errors"
	"fmt"
	"net"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Reader dumps a device's ingress filters over rtnetlink.
type Reader struct {
	c *netlink.Conn
}

// NewReader opens an rtnetlink socket in the current network namespace.
func NewReader() (*Reader, error) {
	c, err := dialRoute()
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(4 << 20)
	return &Reader{c: c}, nil
}

// dialRoute opens an rtnetlink socket in the current network namespace.
func dialRoute() (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, fmt.Errorf("tc: rtnetlink: %w", err)
	}
	return c, nil
}

// Close closes the socket.
func (r *Reader) Close() error { return r.c.Close() }

// Filters returns every filter of dev's ingress (clsact or the ingress
// qdisc), all chains. No such qdisc: none, no error.
func (r *Reader) Filters(dev string, ifindex int) ([]*KernelFilter, error) {
	req := netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETTFILTER, Flags: netlink.Request | netlink.Dump},
		Data:   TCMsg{Ifindex: int32(ifindex), Parent: IngressParent}.Marshal(),
	}
	msgs, err := r.c.Execute(req)
	if err != nil {
		// The kernel answers a dump of a device without an ingress
		// qdisc with EINVAL (or ENOENT).
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("tc: dump filters of %s: %w", dev, err)
	}
	var out []*KernelFilter
	names := NewIfnameMemo()
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWTFILTER {
			continue
		}
		f, err := DecodeFilter(m.Data, dev, names)
		if err != nil {
			return nil, fmt.Errorf("tc: filter of %s: %w", dev, err)
		}
		// A dump lists each (chain, pref) once without a handle before
		// its filters: that is the classifier, not a filter.
		if f.Handle == 0 {
			continue
		}
		// Other classifiers list their entries (u32: hash tables and
		// keys): one stands for the pref, which is punted whole.
		if f.Kind != "flower" && len(out) > 0 {
			if last := out[len(out)-1]; last.Kind == f.Kind && last.Chain == f.Chain && last.Prio == f.Prio {
				continue
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// NewIfnameMemo resolves ifindexes to device names, each once: every
// filter of a dump redirecting out of the same device would otherwise
// cost a link dump of its own (net.InterfaceByIndex).
func NewIfnameMemo() func(int) (string, error) {
	type answer struct {
		name string
		err  error
	}
	seen := map[int]answer{}
	return func(i int) (string, error) {
		if a, ok := seen[i]; ok {
			return a.name, a.err
		}
		var a answer
		if ifi, err := net.InterfaceByIndex(i); err != nil {
			a.err = err
		} else {
			a.name = ifi.Name
		}
		seen[i] = a
		return a.name, a.err
	}
}
