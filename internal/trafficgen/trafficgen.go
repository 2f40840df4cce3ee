// Package trafficgen sends frames out of a device as fast as one CPU can:
// a four-instruction XDP program that redirects every frame to the device,
// run with BPF_PROG_TEST_RUN in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES),
// so each frame really leaves through the driver's XDP transmit path. On a
// veth the peer's NAPI processes them on the same CPU, within the call.
package trafficgen

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Generator redirects test frames to one device (of the network
// namespace of the thread that creates and runs it).
type Generator struct {
	prog    *ebpf.Program
	ifindex int
}

// New loads the generator for ifindex.
func New(ifindex int) (*Generator, error) {
	spec := &ebpf.ProgramSpec{
		Name: "xf_trafficgen",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			// return bpf_redirect(ifindex, 0)
			asm.Mov.Imm(asm.R1, int32(ifindex)),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnRedirect.Call(),
			asm.Return(),
		},
		License: "GPL",
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, fmt.Errorf("load traffic generator: %w", err)
	}
	return &Generator{prog: prog, ifindex: ifindex}, nil
}

// Close unloads the program.
func (g *Generator) Close() error { return g.prog.Close() }

// xdpMd is struct xdp_md, the context of an XDP test run.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Send transmits frame n times in one call (batches of 64 frames).
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
