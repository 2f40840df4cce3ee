package classbench

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestFormatRoundTrip(t *testing.T) {
	rules := Generate(loadSeed(t, "fw1"), 1000, 1, DefaultOptions)
	text := Format(rules)
	back, err := ParseRules(strings.NewReader(text))
	if err != nil || !slices.Equal(back, rules) {
		t.Fatalf("round trip: %d rules back of %d, err %v", len(back), len(rules), err)
	}
	one := []Rule{
		{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32"), PortRange{0, 65535}, PortRange{80, 80}, 6, 0xff},
		{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("1.2.0.0/16"), PortRange{1024, 65535}, PortRange{0, 1023}, 0, 0},
	}
	want := "@10.0.0.0/8\t192.168.1.1/32\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n" +
		"@0.0.0.0/0\t1.2.0.0/16\t1024 : 65535\t0 : 1023\t0x00/0x00\t0x0000/0x0000\t\n"
	if got := Format(one); got != want {
		t.Errorf("Format:\n%q\nwant\n%q", got, want)
	}
	// A line as db_generator writes it, flags and all.
	got, err := ParseRules(strings.NewReader("@192.142.27.207/32\t67.154.252.231/32\t0 : 65535\t7205 : 7205\t0x06/0xFF\t0x1000/0x1000\t\n\n"))
	wantRule := Rule{netip.MustParsePrefix("192.142.27.207/32"), netip.MustParsePrefix("67.154.252.231/32"), PortRange{0, 65535}, PortRange{7205, 7205}, 6, 0xff}
	if err != nil || len(got) != 1 || got[0] != wantRule {
		t.Errorf("ParseRules: %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.0/8\t1.0.0.0/8\t0 : 1\t0 : 1\t0x00/0x00", "@10.0.0.0/8\t1.0.0.0/8\t2 : 1\t0 : 1\t0x00/0x00", "@::/0\t1.0.0.0/8\t0 : 1\t0 : 1\t0x00/0x00"} {
		if _, err := ParseRules(strings.NewReader("\n" + bad + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("ParseRules(%q): %v", bad, err)
		}
	}
}

// naiveMatch is Matches written independently, with netip.
func naiveMatch(r Rule, h Header) bool {
	addr := func(a uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
	}
	in := func(p PortRange, v uint16) bool { return p.Lo <= v && v <= p.Hi }
	return r.Src.Contains(addr(h.Src)) && r.Dst.Contains(addr(h.Dst)) &&
		in(r.SrcPort, h.SrcPort) && in(r.DstPort, h.DstPort) && (r.ProtoMask == 0 || r.Proto == h.Proto)
}

func TestTrace(t *testing.T) {
	rules := Generate(loadSeed(t, "ipc1"), 1000, 1, DefaultOptions)
	trace := Trace(rules, 20000, 1, DefaultParetoA, DefaultParetoB)
	if len(trace) != 20000 || !slices.Equal(trace, Trace(rules, 20000, 1, DefaultParetoA, DefaultParetoB)) {
		t.Fatalf("trace of %d headers, or not deterministic", len(trace))
	}
	if slices.Equal(trace, Trace(rules, 20000, 2, DefaultParetoA, DefaultParetoB)) {
		t.Error("trace seeds 1 and 2 give the same trace")
	}
	for i, h := range trace {
		got := FirstMatch(rules, h)
		if got < 0 {
			t.Fatalf("header %d %+v matches no rule", i, h)
		}
		if i%4 == 0 && slices.IndexFunc(rules, func(r Rule) bool { return naiveMatch(r, h) }) != got {
			t.Fatalf("header %d: FirstMatch %d disagrees with the naive scan", i, got)
		}
	}
	repeats := func(tr []Header) (n float64) {
		for i := 1; i < len(tr); i++ {
			if tr[i] == tr[i-1] {
				n++
			}
		}
		return n / float64(len(tr))
	}
	// Pareto(1, 0.1) bursts average about 2 headers over 20000 draws.
	if loc, flat := repeats(trace), repeats(Trace(rules, 20000, 1, 1, 0)); loc < 0.3 || flat > 0.05 {
		t.Errorf("repeated headers: %.3f with locality, %.3f without", loc, flat)
	}
	if Trace(nil, 10, 1, 1, 0.1) != nil || FirstMatch(rules[:0], trace[0]) != -1 {
		t.Error("empty rule set")
	}
}

func TestCorners(t *testing.T) {
	r := Rule{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("0.0.0.0/0"), PortRange{5, 9}, PortRange{80, 80}, 0, 0}
	var seen [5][2]bool
	tr := Trace([]Rule{r}, 500, 3, 1, 0)
	for _, h := range tr {
		for i, v := range [5][3]uint32{
			{h.Src, 0x0a010000, 0x0a01ffff}, {h.Dst, 0, math.MaxUint32},
			{uint32(h.SrcPort), 5, 9}, {uint32(h.DstPort), 80, 80}, {uint32(h.Proto), 0, 255},
		} {
			if v[0] != v[1] && v[0] != v[2] {
				t.Fatalf("field %d of %+v is not at a corner", i, h)
			}
			seen[i][0] = seen[i][0] || v[0] == v[1]
			seen[i][1] = seen[i][1] || v[0] == v[2]
		}
	}
	if seen != [5][2]bool{{true, true}, {true, true}, {true, true}, {true, true}, {true, true}} {
		t.Errorf("corners not all reached: %v", seen)
	}
}
