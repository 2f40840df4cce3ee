// Package trafficgen sends frames out of a device as fast as one CPU can:
// a tiny XDP program that redirects every frame to the device, run with
// BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES), so
// each frame really leaves through the driver's XDP transmit path. On a
// veth the peer's NAPI processes them on the same CPU, within the call.
//
// To spread traffic over many flows, the program can write random bits
// into one 16-bit word of an IPv4 frame (an address half, say) before
// redirecting it. It keeps the IPv4 header checksum right by writing the
// complement of those bits into the header's identification field: the
// frame is prepared with the word's random bits zero and the ID 0xFFFF, so
// word + ID stays 0xFFFF in ones' complement arithmetic and the checksum
// never changes.
package trafficgen

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Spread says which bits of the frame change from packet to packet.
type Spread struct {
	// Offset of a 16-bit big-endian word in the frame, inside the IPv4
	// header (addresses: ethernet 14 + 12..19). 0: no spreading.
	Offset int
	// Mask: the bits of that word set at random for each frame.
	Mask uint16
}

// Generator redirects test frames to one device (of the network
// namespace of the thread that creates and runs it).
type Generator struct {
	prog    *ebpf.Program
	ifindex int
	spread  Spread
}

const (
	ethLen     = 14
	ipIDOffset = ethLen + 4
	ipCsumOff  = ethLen + 10
)

// New loads the generator for ifindex, spreading frames as s says.
func New(ifindex int, s Spread) (*Generator, error) {
	insns := asm.Instructions{}
	if s.Offset != 0 {
		if s.Offset < ethLen+12 || s.Offset > ethLen+18 {
			return nil, fmt.Errorf("spread offset %d: not an IPv4 address word", s.Offset)
		}
		insns = append(insns,
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.FnGetPrandomU32.Call(),
			asm.And.Imm(asm.R0, int32(s.Mask)),
			asm.Mov.Reg(asm.R7, asm.R0), // random bits, for the word
			asm.Xor.Imm(asm.R0, 0xFFFF), // their complement, for the ID
			asm.HostTo(asm.BE, asm.R7, asm.Half),
			asm.HostTo(asm.BE, asm.R0, asm.Half),
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
			asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, int32(s.Offset+2)),
			asm.JGT.Reg(asm.R4, asm.R3, "send"),
			// A live frame's page is reused with what the last run
			// wrote: clear the bits, then set them.
			asm.LoadMem(asm.R5, asm.R2, int16(s.Offset), asm.Half),
			asm.And.Imm(asm.R5, int32(beHalf(^s.Mask))),
			asm.Or.Reg(asm.R5, asm.R7),
			asm.StoreMem(asm.R2, int16(s.Offset), asm.R5, asm.Half),
			asm.StoreMem(asm.R2, ipIDOffset, asm.R0, asm.Half),
		)
	}
	// return bpf_redirect(ifindex, 0)
	redirect := asm.Mov.Imm(asm.R1, int32(ifindex))
	if s.Offset != 0 {
		redirect = redirect.WithSymbol("send")
	}
	insns = append(insns,
		redirect,
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xf_trafficgen",
		Type:         ebpf.XDP,
		Instructions: insns,
		License:      "GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("load traffic generator: %w", err)
	}
	return &Generator{prog: prog, ifindex: ifindex, spread: s}, nil
}

// Close unloads the program.
func (g *Generator) Close() error { return g.prog.Close() }

// xdpMd is struct xdp_md, the context of an XDP test run.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Prepare returns a copy of an Ethernet/IPv4 frame made ready for the
// spreading: the random bits of the word cleared, the ID 0xFFFF, the
// header checksum recomputed.
func (g *Generator) Prepare(frame []byte) ([]byte, error) {
	f := append([]byte(nil), frame...)
	if g.spread.Offset == 0 {
		return f, nil
	}
	if len(f) < ethLen+20 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[ethLen]>>4 != 4 {
		return nil, errors.New("spreading needs an untagged IPv4 frame")
	}
	w := binary.BigEndian.Uint16(f[g.spread.Offset:])
	binary.BigEndian.PutUint16(f[g.spread.Offset:], w&^g.spread.Mask)
	binary.BigEndian.PutUint16(f[ipIDOffset:], 0xFFFF)
	binary.BigEndian.PutUint16(f[ipCsumOff:], 0)
	binary.BigEndian.PutUint16(f[ipCsumOff:], ipChecksum(f[ethLen:ethLen+int(f[ethLen]&0x0F)*4]))
	return f, nil
}

// beHalf is the value a big-endian 16-bit load of v's bytes gives on this
// (little-endian) host.
func beHalf(v uint16) uint16 { return v<<8 | v>>8 }

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xFFFF {
		s = s&0xFFFF + s>>16
	}
	return ^uint16(s)
}

// Send transmits frame n times in one call (batches of 64 frames). A
// spreading generator needs the frame from Prepare.
func (g *Generator) Send(frame []byte, n uint32) error {
	_, err := g.prog.Run(&ebpf.RunOptions{
		Data:      frame,
		Repeat:    n,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		BatchSize: 64,
		Context:   &xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: 1},
	})
	if err != nil {
		return fmt.Errorf("send %d frames out of ifindex %d: %w", n, g.ifindex, err)
	}
	return nil
}
