package testutil

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Frame is one captured frame. The kernel moves the outer VLAN tag into
// metadata before packet taps run; VLANTCI/VLANTPID carry it back.
type Frame struct {
	Data     []byte
	VLAN     bool
	VLANTCI  uint16
	VLANTPID uint16
	Outgoing bool // sent by this host, not received
}

// Capture reads every frame arriving on one device.
type Capture struct {
	fd int
}

// NewCapture opens an AF_PACKET socket on ifname inside ns.
func NewCapture(t testing.TB, ns *Netns, ifname string) *Capture {
	t.Helper()
	c := &Capture{fd: -1}
	ns.Run(t, func() {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			panic(err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			panic(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			panic(err)
		}
		// A frame that came through XDP holds a whole page: the default
		// buffer fills after ~50 of them when the reader is slow (as in
		// the emulated VM of make vmtest) and the rest are lost.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			panic(err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			panic(err)
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			panic(err)
		}
		c.fd = fd
	})
	t.Cleanup(func() { unix.Close(c.fd) })
	return c
}

// Collect returns the frames that arrive within d and satisfy keep.
func (c *Capture) Collect(d time.Duration, keep func(Frame) bool) []Frame {
	var out []Frame
	buf := make([]byte, 9000)
	oob := make([]byte, 256)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			continue // timeout: look at the clock again
		}
		f := Frame{Data: append([]byte(nil), buf[:n]...)}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			f.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		}
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA &&
					len(m.Data) >= int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
					aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
					if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 {
						f.VLAN, f.VLANTCI, f.VLANTPID = true, aux.Vlan_tci, aux.Vlan_tpid
					}
				}
			}
		}
		if keep == nil || keep(f) {
			out = append(out, f)
		}
	}
	return out
}

// Sender sends raw frames out of one device.
type Sender struct {
	fd int
	sa unix.SockaddrLinklayer
}

// NewSender opens an AF_PACKET socket for ifname, in the network namespace
// of the calling thread (call it inside Netns.Run).
func NewSender(ifname string) (*Sender, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &Sender{fd: fd, sa: unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}}, nil
}

// Send transmits one Ethernet frame.
func (s *Sender) Send(f []byte) error {
	s.sa.Protocol = htons(binary.BigEndian.Uint16(f[12:14]))
	return unix.Sendto(s.fd, f, 0, &s.sa)
}

// Close closes the socket.
func (s *Sender) Close() error { return unix.Close(s.fd) }

// Inject sends raw frames out of ifname inside ns.
func Inject(t testing.TB, ns *Netns, ifname string, frames ...[]byte) {
	t.Helper()
	ns.Run(t, func() {
		s, err := NewSender(ifname)
		if err != nil {
			panic(err)
		}
		defer s.Close()
		for _, f := range frames {
			if err := s.Send(f); err != nil {
				panic(err)
			}
		}
	})
}

// HasPayload reports whether a frame carries marker anywhere.
func HasPayload(f Frame, marker []byte) bool {
	for i := 0; i+len(marker) <= len(f.Data); i++ {
		if string(f.Data[i:i+len(marker)]) == string(marker) {
			return true
		}
	}
	return false
}
