package trafficgen

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// TraceHeader is one header of a trace the generator replays: the IPv4
// header and the first four bytes after it (the ports of TCP and UDP).
type TraceHeader [traceHeaderLen]byte

const traceHeaderLen = 24

// IPv4TraceHeader makes a trace header: an IPv4 header from src to dst of
// protocol proto (TTL 64, no options, total length totalLen, a right
// checksum) and the two ports after it.
func IPv4TraceHeader(src, dst uint32, proto uint8, sport, dport uint16, totalLen uint16) TraceHeader {
	var h TraceHeader
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], totalLen)
	h[8], h[9] = 64, proto
	binary.BigEndian.PutUint32(h[12:], src)
	binary.BigEndian.PutUint32(h[16:], dst)
	binary.BigEndian.PutUint16(h[10:], ipChecksum(h[:20]))
	binary.BigEndian.PutUint16(h[20:], sport)
	binary.BigEndian.PutUint16(h[22:], dport)
	return h
}

// NewTrace loads a generator that sends, for every frame, one of headers
// picked at random: it writes the header over the frame's IPv4 header and
// ports, so a frame Send is given must be Ethernet, IPv4 without options,
// and at least 14+24 bytes long.
func NewTrace(ifindex int, headers []TraceHeader) (*Generator, error) {
	if len(headers) == 0 || len(headers) > 1<<24 {
		return nil, fmt.Errorf("a trace of %d headers: 1 to 2^24", len(headers))
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "xf_trace", Type: ebpf.Array, KeySize: 4,
		ValueSize: traceHeaderLen, MaxEntries: uint32(len(headers))})
	if err != nil {
		return nil, fmt.Errorf("trace map: %w", err)
	}
	keys := make([]uint32, len(headers))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, headers, nil); err != nil {
		m.Close()
		return nil, fmt.Errorf("write trace: %w", err)
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetPrandomU32.Call(),
		asm.Mod.Imm32(asm.R0, int32(len(headers))),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "send"),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ethLen+traceHeaderLen),
		asm.JGT.Reg(asm.R4, asm.R3, "send"),
	}
	for off := int16(0); off < traceHeaderLen; off += 8 {
		insns = append(insns,
			asm.LoadMem(asm.R5, asm.R0, off, asm.DWord),
			asm.StoreMem(asm.R2, ethLen+off, asm.R5, asm.DWord))
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R1, int32(ifindex)).WithSymbol("send"),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "xf_tracegen", Type: ebpf.XDP, Instructions: insns, License: "GPL"})
	m.Close() // the program holds it
	if err != nil {
		return nil, fmt.Errorf("load trace generator: %w", err)
	}
	return &Generator{prog: prog, ifindex: ifindex}, nil
}
