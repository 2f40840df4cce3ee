package selftests

import (
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
)

// TestNftRuleToXDPLatency measures how long after the kernel accepts an
// nft rule change the change is live in XDP: from the netlink ACK of the
// transaction to the bump of the pinned cache generation, which the engine
// writes after the new flows and before the change returns. It logs
// p50/p99/max (README has the figure); it fails only if a change never
// arrives.
func TestNftRuleToXDPLatency(t *testing.T) {
	tp := newNftTopo(t)
	d := startDaemon(t, tp.b)
	d.logOnFailure(t)
	tp.loadChain(t, dropFrom3)
	waitFlows(t, tp.b, "first rule", func(fs []jsonFlow) bool { return len(nftFlows(fs)) == 1 && allInstalled(fs) })
	readGen := pinnedGeneration(t, tp.b, "b0")
	rounds := 200
	if testing.Short() {
		rounds = 40
	}
	// Four kinds of change in turn: a rule whose entries join existing
	// subtables, its deletion, a rule that needs new subtables (another
	// mask, on a new level: it overlaps the first rule), its deletion
	// (subtables emptied).
	kinds := []string{"add, same mask", "delete, same mask", "add, new mask", "delete, new mask"}
	ipRule := func(off uint32, last byte) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x08, 0x00}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{198, 18, 4, last}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}
	}
	measure := func(gap time.Duration) (all []time.Duration, byKind [4][]time.Duration) {
		tp.b.Run(t, func() {
			c, err := nftables.New()
			if err != nil {
				panic(err)
			}
			table := &nftables.Table{Name: "xf", Family: nftables.TableFamilyNetdev}
			chain := &nftables.Chain{Name: "in", Table: table}
			for i := 0; i < rounds; i++ {
				g0 := readGen()
				switch k := i % 4; k {
				case 0, 2:
					off := uint32(12) // ip saddr
					if k == 2 {
						off = 16 // ip daddr
					}
					c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: ipRule(off, byte(i))})
				default:
					rules, err := c.GetRules(table, chain)
					if err != nil {
						panic(err)
					}
					if err := c.DelRule(rules[len(rules)-1]); err != nil {
						panic(err)
					}
				}
				if err := c.Flush(); err != nil {
					panic(err)
				}
				t0 := time.Now()
				if !waitGeneration(readGen, g0, t0, 2*time.Second) {
					panic(fmt.Sprintf("change %d not in XDP after 2 s", i))
				}
				d := time.Since(t0)
				all = append(all, d)
				byKind[i%4] = append(byKind[i%4], d)
				time.Sleep(gap)
			}
		})
		return all, byKind
	}
	// Spaced 60 ms apart (longer than a grace period, so nothing is held
	// when a change comes), then back to back.
	for _, gap := range []time.Duration{60 * time.Millisecond, 0} {
		all, byKind := measure(gap)
		t.Logf("nft rule change -> live in XDP, %d changes %v apart: %s", len(all), gap, percentiles(all))
		for k, lat := range byKind {
			// Deletions often go live before the ACK reaches the client
			// (the kernel's commit of a deletion returns late), so each
			// kind has its own figures rather than flatter the mix.
			t.Logf("  %-18s %s", kinds[k]+":", percentiles(lat))
		}
	}
}

// pinForTiming keeps the calling thread (locked, as in Netns.Run) on cpu,
// and makes its short sleeps short: the default 50 µs timer slack would
// stretch a 2 µs nanosleep to 50.
func pinForTiming(cpu int) {
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		panic(err)
	}
}

// One measurement, step by step: its rounds share the traffic and the daemon.
// TestNftRuleToFirstPacketInXDP measures what a user sees: from the ACK of
// an nft rule to the first packet that rule handles in XDP, under steady
// traffic (a frame every few µs from a0). Each round adds `ip saddr
// 198.18.3.3 drop`, waits for xdpflow's drop counter to move, deletes the
// rule and waits for the counter to stop. It logs the figures (README) and
// fails only if a rule never takes effect or its deletion never does.
func TestNftRuleToFirstPacketInXDP(t *testing.T) {
	tp := newNftTopo(t)
	// The traffic and what it costs the kernel run on CPU 0; the daemon,
	// and this test's polling, on CPU 1 (on two CPUs, a daemon woken on
	// the CPU the sender keeps busy waits for the scheduler: milliseconds).
	d := startDaemonOnCPU(t, tp.b, 1)
	d.logOnFailure(t)
	d.waitRunning(t) // what is timed is a running daemon's, not its start
	tp.loadChain(t)
	counters, err := ebpf.LoadPinnedMap(filepath.Join("/sys/fs/bpf/xdpflow", fmt.Sprint(tp.b.Ino), "b0", "counters"), nil)
	if err != nil {
		t.Fatalf("open pinned counters: %v", err)
	}
	defer counters.Close()
	drops := func() uint64 {
		c, err := maps.ReadCounters(counters)
		if err != nil {
			panic(err.Error())
		}
		return c[maps.CounterDrop]
	}

	// Steady traffic: one frame from 198.18.3.3 every few µs, from a
	// thread of its own.
	frame := testutil.Eth(mac(t, tp.b, "b0"), tp.a0MAC, nil, 0x0800,
		testutil.IPv4(net.ParseIP("198.18.3.3"), net.ParseIP("198.18.3.4"), 17, testutil.IPv4Opts{},
			testutil.UDP(1024, 9, make([]byte, 18))))
	var stop atomic.Bool
	var sent atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tp.a.Run(t, func() {
			snd, err := testutil.NewSender("a0")
			if err != nil {
				panic(err)
			}
			defer snd.Close()
			// On CPU 0, with what the frames cost the kernel: the
			// daemon has the other CPU.
			pinForTiming(0)
			for !stop.Load() {
				if err := snd.Send(frame); err != nil {
					panic(err)
				}
				sent.Add(1)
				_ = unix.Nanosleep(&unix.Timespec{Nsec: 2_000}, nil)
			}
		})
	}()
	defer func() { stop.Store(true); <-done }()

	rounds := 60
	if testing.Short() {
		rounds = 20
	}
	// measure runs the rounds, gap apart.
	measure := func(gap time.Duration) (lat, del []time.Duration) {
		tp.b.Run(t, func() {
			c, err := nftables.New()
			if err != nil {
				panic(err)
			}
			pinForTiming(1)
			table := &nftables.Table{Name: "xf", Family: nftables.TableFamilyNetdev}
			chain := &nftables.Chain{Name: "in", Table: table}
			drop := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x08, 0x00}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{198, 18, 3, 3}},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}
			// until polls f until it holds, returning the time it
			// took: every 25 µs (each wakeup takes the daemon's CPU).
			until := func(t0 time.Time, what string, f func() bool) time.Duration {
				for !f() {
					_ = unix.Nanosleep(&unix.Timespec{Nsec: 10_000}, nil)
					if time.Since(t0) > 2*time.Second {
						panic(fmt.Sprintf("%s: not within 2 s (%d frames sent)", what, sent.Load()))
					}
				}
				return time.Since(t0)
			}
			for i := 0; i < rounds; i++ {
				d0 := drops()
				c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: drop})
				if err := c.Flush(); err != nil {
					panic(err)
				}
				t0 := time.Now()
				lat = append(lat, until(t0, fmt.Sprintf("round %d: first packet dropped in XDP", i),
					func() bool { return drops() > d0 }))

				rules, err := c.GetRules(table, chain)
				if err != nil || len(rules) != 1 {
					panic(fmt.Sprintf("get rules: %v (%d)", err, len(rules)))
				}
				if err := c.DelRule(rules[0]); err != nil {
					panic(err)
				}
				if err := c.Flush(); err != nil {
					panic(err)
				}
				// Deleted: the counter stops. "Stopped" is 200 µs without a
				// drop, at a frame every few µs; that window is taken off.
				t0 = time.Now()
				last, lastMove := drops(), time.Now()
				del = append(del, until(t0, fmt.Sprintf("round %d: drops stop after the delete", i), func() bool {
					if n := drops(); n != last {
						last, lastMove = n, time.Now()
					}
					return time.Since(lastMove) > 200*time.Microsecond
				})-time.Since(lastMove))
				time.Sleep(gap)
			}
		})
		return lat, del
	}
	// Spaced 60 ms apart (longer than an RCU grace period, so nothing the
	// daemon freed is still held when the next change comes), then back
	// to back (the daemon's ring of subtable list buffers runs out within
	// a grace period, and a change waits for one).
	for _, gap := range []time.Duration{60 * time.Millisecond, 0} {
		s0 := sent.Load()
		start := time.Now()
		lat, del := measure(gap)
		t.Logf("changes %v apart, %.0f frames/s: nft rule ACK -> first packet dropped in XDP, %d rules: %s",
			gap, float64(sent.Load()-s0)/time.Since(start).Seconds(), len(lat), percentiles(lat))
		t.Logf("  nft rule delete ACK -> last packet dropped in XDP, %d deletes: %s", len(del), percentiles(del))
	}
}
