package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batcher is what a watch does with one multicast socket's notifications.
type batcher interface {
	add(msgs []netlink.Message) // note what changed
	lost()                      // the socket overran: anything may have changed
	ready() bool                // something to act on
	flush()                     // act on it, and forget it
}

// follow reads c's notifications until ctx ends and hands them to b. It
// acts in the goroutine that reads: handing over to another goroutine
// costs a thread wakeup, 0.1-0.3 ms on this class of VM, a third of the
// time from a change to XDP. What queued up meanwhile (during a sync, or a
// burst of changes) is taken in one go and acted on once: b acts when it
// is ready and nothing more is queued.
func follow(ctx context.Context, c *netlink.Conn, lg *Log, name string, b batcher) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		msgs, err := c.Receive()
		switch {
		case err == nil:
			b.add(msgs)
		case ctx.Err() != nil:
			return
		case errors.Is(err, unix.ENOBUFS):
			b.lost()
		default:
			// What failed to arrive is unknown: everything is read again
			// (and every 100 ms while the socket keeps failing).
			lg.Errorf("%s: %v (reading everything again)", name, err)
			time.Sleep(100 * time.Millisecond)
			b.lost()
			b.flush()
			continue
		}
		if b.ready() && !queued(c) {
			b.flush()
		}
	}
}

// queued reports whether c has a datagram (or an error) waiting, without
// waiting for one. (A read deadline in the past does not do: Go returns
// the timeout before it reads, and a burst of 2,000 TC filters was then
// handled one notification at a time, each a sync of the device.)
func queued(c *netlink.Conn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ready = err == nil && n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLERR) != 0
	})
	return ready
}

// dialGroups opens a netlink socket subscribed to groups; call it before
// reading the state it reports on, so no change falls between the read and
// the subscription.
func dialGroups(family int, name string, groups ...uint32) (*netlink.Conn, error) {
	c, err := netlink.Dial(family, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, g := range groups {
		if err := c.JoinGroup(g); err != nil {
			c.Close()
			return nil, fmt.Errorf("%s: join group %d: %w", name, g, err)
		}
	}
	// Room for a burst (Open vSwitch installs thousands of flows at
	// once; an overrun costs a resync of everything). SO_RCVBUF stops at
	// net.core.rmem_max, 208 KB by default: a few hundred notifications;
	// root may go past it with SO_RCVBUFFORCE.
	_ = c.SetReadBuffer(8 << 20)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		})
	}
	return c, nil
}
