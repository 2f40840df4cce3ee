// Package framegen draws Ethernet frames from the whole space a packet
// parser reads, not from what a classifier expects: well-formed frames and,
// as often, frames with every length and offset field inconsistent with
// the frame (too long, too short, zero), truncated at any byte, with odd
// IHLs, versions and options, IPv6 extension header chains, fragments of
// every kind, 802.3/LLC/SNAP frames, VLAN tags with length-typed or
// unusual inner types, priority tags, QinQ and three tags, ARP and RARP
// with any opcode, hardware and protocol type and length, ICMP of 0-8
// bytes and TCP with short data offsets.
//
// Differential tests send each frame with and without xdpflow: any
// difference in fate is a bug, whatever the frame is.
package framegen

import (
	"encoding/binary"
	"math/rand"
	"net"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// Pools are the values addresses and ports are drawn from. Small pools
// make frames meet the rules that draw from the same pools.
type Pools struct {
	SrcMACs, DstMACs []net.HardwareAddr
	SrcIPs, DstIPs   []net.IP // IPv4
	Src6, Dst6       []net.IP
	Ports            []uint16
	VLANs            []uint16
}

// Gen draws frames.
type Gen struct {
	rng *rand.Rand
	p   Pools
}

// New returns a generator drawing from rng and pools.
func New(rng *rand.Rand, p Pools) *Gen { return &Gen{rng: rng, p: p} }

func pick[T any](g *Gen, s []T) T { return s[g.rng.Intn(len(s))] }

func (g *Gen) chance(n int) bool { return g.rng.Intn(n) == 0 }

func (g *Gen) bytes(n int) []byte {
	b := make([]byte, n)
	g.rng.Read(b)
	return b
}

// Frame draws one frame. About half are malformed in some field.
func (g *Gen) Frame() []byte {
	f := g.frame()
	switch r := g.rng.Intn(10); {
	case r == 0:
		// Truncated at a random byte past the MACs and ethertype.
		if len(f) > 14 {
			f = f[:14+g.rng.Intn(len(f)-14)]
		}
	case r == 1 && len(f) > 14:
		// One byte anywhere past the MACs flipped.
		i := 12 + g.rng.Intn(len(f)-12)
		f[i] ^= byte(1 + g.rng.Intn(255))
	}
	return f
}

// Truncations returns every prefix of f from the bare Ethernet header up,
// f itself excluded.
func Truncations(f []byte) [][]byte {
	var out [][]byte
	for n := 14; n < len(f); n++ {
		out = append(out, append([]byte(nil), f[:n]...))
	}
	return out
}

func (g *Gen) frame() []byte {
	dst := pick(g, g.p.DstMACs)
	src := pick(g, g.p.SrcMACs)
	b := append(append([]byte(nil), dst[:6]...), src[:6]...)
	b = append(b, g.tags()...)
	etype, payload := g.l3()
	b = binary.BigEndian.AppendUint16(b, etype)
	b = append(b, payload...)
	if g.chance(6) {
		// Trailing bytes past the datagram, as Ethernet padding leaves.
		b = append(b, g.bytes(1+g.rng.Intn(40))...)
	}
	return b
}

// tags returns the VLAN tags between the MACs and the ethertype.
func (g *Gen) tags() []byte {
	tag := func(tpid uint16, tci uint16) []byte {
		return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, tpid), tci)
	}
	tci := func() uint16 {
		switch g.rng.Intn(5) {
		case 0:
			return uint16(g.rng.Intn(8)) << 13 // priority tag: VID 0
		case 1:
			return uint16(g.rng.Uint32()) // any PCP, DEI, VID
		}
		return pick(g, g.p.VLANs) | uint16(g.rng.Intn(8))<<13
	}
	tpid := func() uint16 { return pick(g, []uint16{0x8100, 0x88a8}) }
	switch r := g.rng.Intn(20); {
	case r < 11:
		return nil
	case r < 16:
		return tag(tpid(), tci())
	case r < 19:
		return append(tag(tpid(), tci()), tag(tpid(), tci())...)
	}
	return append(append(tag(tpid(), tci()), tag(tpid(), tci())...), tag(0x8100, tci())...)
}

// l3 returns an ethertype and what follows it.
func (g *Gen) l3() (uint16, []byte) {
	switch r := g.rng.Intn(40); {
	case r < 15:
		return 0x0800, g.ipv4()
	case r < 25:
		return 0x86dd, g.ipv6()
	case r < 30:
		return 0x0806, g.arp()
	case r < 32:
		return 0x8035, g.arp()
	case r < 35:
		// 802.3: a length, then LLC (maybe SNAP) or raw IPX's 0xFFFF.
		body := g.llc()
		n := uint16(len(body))
		if g.chance(3) {
			n = uint16(g.rng.Intn(0x600))
		}
		return n, body
	case r < 37:
		// A version field that does not match the ethertype.
		if g.chance(2) {
			return 0x0800, g.ipv6()
		}
		return 0x86dd, g.ipv4()
	}
	return pick(g, []uint16{0x88b5, 0x8847, 0x88cc, 0x0600, 0x05ff, 0xffff, 0x0000, uint16(g.rng.Uint32())}),
		g.bytes(g.rng.Intn(64))
}

func (g *Gen) llc() []byte {
	switch g.rng.Intn(4) {
	case 0:
		return append([]byte{0xff, 0xff}, g.bytes(g.rng.Intn(40))...) // raw 802.3 (IPX)
	case 1:
		// SNAP carrying IPv4.
		return append([]byte{0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00}, g.ipv4()...)
	case 2:
		return append([]byte{0x42, 0x42, 0x03}, g.bytes(35)...) // STP
	}
	return g.bytes(g.rng.Intn(50))
}

// proto draws an IP protocol number.
func (g *Gen) proto(icmp uint8) uint8 {
	return pick(g, []uint8{6, 6, 6, 17, 17, 17, icmp, icmp, 132, 1, 58, 47, 50, 51, 0, 59, 255, uint8(g.rng.Intn(256))})
}

// l4 builds a transport header and payload for proto, often short or odd.
func (g *Gen) l4(proto, icmp uint8) []byte {
	port := func() uint16 {
		if g.chance(8) {
			return uint16(g.rng.Uint32())
		}
		return pick(g, g.p.Ports)
	}
	payload := g.bytes(g.rng.Intn(24))
	var h []byte
	switch proto {
	case 6:
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h, port())
		binary.BigEndian.PutUint16(h[2:], port())
		doff := uint16(5)
		switch g.rng.Intn(8) {
		case 0:
			doff = uint16(g.rng.Intn(5)) // shorter than the header
		case 1:
			doff = uint16(6 + g.rng.Intn(10)) // options, maybe past the end
			h = append(h, g.bytes(4*int(doff-5)*g.rng.Intn(2))...)
		}
		flags := pick(g, []uint16{0x002, 0x010, 0x012, 0x011, 0x004, 0x018, 0, uint16(g.rng.Intn(0x1000))})
		binary.BigEndian.PutUint16(h[12:], doff<<12|flags)
	case 17, 132:
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h, port())
		binary.BigEndian.PutUint16(h[2:], port())
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
		if g.chance(4) {
			binary.BigEndian.PutUint16(h[4:], uint16(g.rng.Intn(100)))
		}
	case icmp:
		typ := pick(g, []uint8{0, 3, 8, 11, 128, 129, 135, 136, uint8(g.rng.Intn(256))})
		h = append([]byte{typ, uint8(g.rng.Intn(3))}, g.bytes(6)...)
		if g.chance(3) {
			return h[:g.rng.Intn(9)] // 0-8 bytes, nothing after
		}
	default:
		h = g.bytes(g.rng.Intn(12))
	}
	return append(h, payload...)
}

func (g *Gen) ipv4() []byte {
	ihl := 5
	if g.chance(6) {
		ihl = g.rng.Intn(16) // options, or shorter than a header
	}
	proto := g.proto(1)
	hdr := make([]byte, max(20, ihl*4))
	hdr[0] = 4<<4 | uint8(ihl)
	if g.chance(20) {
		hdr[0] = uint8(g.rng.Intn(16))<<4 | uint8(ihl)
	}
	hdr[1] = uint8(g.rng.Intn(4)) << 2
	if g.chance(4) {
		hdr[1] = uint8(g.rng.Intn(256))
	}
	binary.BigEndian.PutUint16(hdr[4:], uint16(g.rng.Uint32()))
	var frag uint16
	switch g.rng.Intn(8) {
	case 0:
		frag = 0x2000 // first fragment
	case 1:
		frag = uint16(1 + g.rng.Intn(0x1fff)) // a later one
		if g.chance(2) {
			frag |= 0x2000
		}
	case 2:
		frag = 0x2000 | 1 // tiny offset
	case 3:
		frag = pick(g, []uint16{0x4000, 0x8000}) // DF, the reserved bit
	}
	binary.BigEndian.PutUint16(hdr[6:], frag)
	hdr[8] = pick(g, []uint8{1, 5, 64, 255, 0})
	hdr[9] = proto
	copy(hdr[12:], pick(g, g.p.SrcIPs).To4())
	copy(hdr[16:], pick(g, g.p.DstIPs).To4())
	for i := 20; i < len(hdr); i++ {
		hdr[i] = pick(g, []uint8{1, 0, uint8(g.rng.Intn(256))}) // NOP, EOL, anything
	}
	body := g.l4(proto, 1)
	tot := len(hdr) + len(body)
	switch g.rng.Intn(6) {
	case 0:
		tot += 1 + g.rng.Intn(2000) // longer than the frame
	case 1:
		tot = g.rng.Intn(tot + 1) // shorter, maybe shorter than the header
	case 2:
		if g.chance(3) {
			tot = 0
		}
	}
	binary.BigEndian.PutUint16(hdr[2:], uint16(tot))
	binary.BigEndian.PutUint16(hdr[10:], 0)
	binary.BigEndian.PutUint16(hdr[10:], testutil.Checksum(hdr[:20]))
	return append(hdr, body...)
}

func (g *Gen) ipv6() []byte {
	hdr := make([]byte, 40)
	binary.BigEndian.PutUint32(hdr, 6<<28|uint32(g.rng.Intn(256))<<20|uint32(g.rng.Intn(1<<20)))
	if g.chance(20) {
		hdr[0] = uint8(g.rng.Intn(16))<<4 | hdr[0]&0x0f
	}
	hdr[7] = pick(g, []uint8{1, 64, 255, 0})
	copy(hdr[8:], pick(g, g.p.Src6).To16())
	copy(hdr[24:], pick(g, g.p.Dst6).To16())
	// Extension headers: a chain of 0-4, some of them odd.
	var ext []byte
	next := &hdr[6]
	n := 0
	if g.chance(3) {
		n = 1 + g.rng.Intn(4)
	}
	for i := 0; i < n; i++ {
		typ := pick(g, []uint8{0, 43, 60, 44, 44, 51, 59})
		*next = typ
		var h []byte
		switch typ {
		case 44: // fragment: 8 bytes
			h = make([]byte, 8)
			off := uint16(0)
			if g.chance(2) {
				off = uint16(1+g.rng.Intn(0x1fff)) << 3
			}
			if g.chance(2) {
				off |= 1 // more fragments
			}
			binary.BigEndian.PutUint16(h[2:], off)
		case 51: // AH: length in 4-byte units minus 2
			l := g.rng.Intn(4)
			h = make([]byte, (l+2)*4)
			h[1] = uint8(l)
		case 59: // no next header
			h = g.bytes(g.rng.Intn(8))
			ext = append(ext, h...)
			next = nil
		default: // length in 8-byte units minus 1
			l := g.rng.Intn(3)
			h = make([]byte, (l+1)*8)
			h[1] = uint8(l)
			if g.chance(8) {
				h[1] = uint8(g.rng.Intn(256)) // points past the frame
			}
		}
		if next == nil {
			break
		}
		ext = append(ext, h...)
		next = &ext[len(ext)-len(h)]
	}
	var body []byte
	if next != nil {
		proto := g.proto(58)
		*next = proto
		body = g.l4(proto, 58)
	}
	pl := len(ext) + len(body)
	switch g.rng.Intn(6) {
	case 0:
		pl += 1 + g.rng.Intn(2000)
	case 1:
		pl = g.rng.Intn(pl + 1)
	}
	binary.BigEndian.PutUint16(hdr[4:], uint16(pl))
	return append(append(hdr, ext...), body...)
}

func (g *Gen) arp() []byte {
	htype, ptype := uint16(1), uint16(0x0800)
	hlen, plen := 6, 4
	switch g.rng.Intn(6) {
	case 0:
		htype = pick(g, []uint16{0, 6, 0xffff, uint16(g.rng.Uint32())})
	case 1:
		ptype = pick(g, []uint16{0x86dd, 0, uint16(g.rng.Uint32())})
	case 2:
		hlen = pick(g, []int{0, 8, 20, g.rng.Intn(256)})
	case 3:
		plen = pick(g, []int{0, 16, g.rng.Intn(256)})
	}
	op := pick(g, []uint16{1, 1, 2, 2, 3, 4, 8, 9, 0, 0x0101, uint16(g.rng.Uint32())})
	b := binary.BigEndian.AppendUint16(nil, htype)
	b = binary.BigEndian.AppendUint16(b, ptype)
	b = append(b, uint8(hlen), uint8(plen))
	b = binary.BigEndian.AppendUint16(b, op)
	addr := func(n int, v []byte) []byte {
		out := make([]byte, min(n, 32))
		copy(out, v)
		return out
	}
	b = append(b, addr(hlen, pick(g, g.p.SrcMACs))...)
	b = append(b, addr(plen, pick(g, g.p.SrcIPs).To4())...)
	b = append(b, addr(hlen, pick(g, g.p.DstMACs))...)
	b = append(b, addr(plen, pick(g, g.p.DstIPs).To4())...)
	return b
}
