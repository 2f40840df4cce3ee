package maps_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// perPacket runs prog over frame repeat times in the kernel and returns
// the kernel's own ns per run.
func perPacket(b *testing.B, prog *ebpf.Program, frame []byte, repeat int) float64 {
	b.Helper()
	_, d, err := prog.Benchmark(frame, repeat, nil)
	if err != nil {
		b.Fatal(err)
	}
	return float64(d.Nanoseconds())
}

func benchFrame(dport uint16) []byte {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	return testutil.Eth(mac, mac, nil, 0x0800, testutil.IPv4(net.IPv4(198, 18, 0, 1), net.IPv4(198, 18, 0, 2), 17,
		testutil.IPv4Opts{}, testutil.UDP(40000, dport, make([]byte, 18))))
}

// BenchmarkXDP: ns per packet through BPF_PROG_TEST_RUN, bare XDP_DROP and
// xdpflow with 1..128 subtables (one rule and mask each, a priority apart).
// "hit" matches the last subtable, so every subtable is searched; "miss" matches
// none. "search" is the program loaded without its flow cache;
// "cached" is the real one, where the repeated frame hits the cache. Each is reported also as a ratio to bare XDP_DROP measured in the
// same run (x_bare_drop).
func BenchmarkXDP(b *testing.B) {
	testutil.RequireRoot(b)
	const repeat = 200000
	drop, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer drop.Close()
	frame := benchFrame(9)
	bare := perPacket(b, drop, frame, repeat)

	b.Run("bare_xdp_drop", func(b *testing.B) {
		var ns float64
		for i := 0; i < b.N; i++ {
			ns = perPacket(b, drop, frame, repeat)
		}
		b.ReportMetric(ns, "ns/pkt")
		b.ReportMetric(ns/bare, "x_bare_drop")
	})
	for _, n := range []int{1, 8, 32, 128} {
		for _, cached := range []bool{false, true} {
			h := newHarnessCache(b, 1, 1<<16, cached)
			for i := 0; i < n; i++ {
				// A mask each (src_port's mask is i+1), all matching
				// the frame's source port 40000.
				text := fmt.Sprintf("protocol ip flower ip_proto udp src_port %d/0x%x dst_port %d action drop",
					40000&(i+1), i+1, 1000+i)
				if !h.install(uint16(i+1), 1, text) {
					b.Fatal("install")
				}
			}
			mode := "search"
			if cached {
				mode = "cached"
			}
			for _, c := range []struct {
				name  string
				frame []byte
			}{{"hit", benchFrame(uint16(1000 + n - 1))}, {"miss", benchFrame(9)}} {
				b.Run(fmt.Sprintf("xdpflow_%d_subtables_%s_%s", n, c.name, mode), func(b *testing.B) {
					var ns float64
					for i := 0; i < b.N; i++ {
						ns = perPacket(b, h.objs.Xdpflow, c.frame, repeat)
					}
					b.ReportMetric(ns, "ns/pkt")
					b.ReportMetric(ns/bare, "x_bare_drop")
				})
			}
		}
	}
}
