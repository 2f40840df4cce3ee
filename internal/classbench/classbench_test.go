package classbench

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

func loadSeed(t *testing.T, name string) *Seed {
	t.Helper()
	s, err := LoadSeed(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// neutral keeps the seed's distributions as they are, so the generated
// set can be compared with them.
var neutral = Options{ScaleAddresses: true}

var big struct {
	sync.Mutex
	sets map[string][]Rule
}

// big10K generates the one 10K set per seed that the tests share.
func big10K(t *testing.T, name string) []Rule {
	big.Lock()
	defer big.Unlock()
	if big.sets == nil {
		big.sets = map[string][]Rule{}
	}
	if big.sets[name] == nil {
		big.sets[name] = Generate(loadSeed(t, name), 10000, 1, neutral)
	}
	return big.sets[name]
}

func TestLoadSeeds(t *testing.T) {
	want := map[string]struct{ scale, protos int }{"acl1": {733, 4}, "fw1": {283, 5}, "ipc1": {1702, 7}}
	for _, name := range Seeds {
		s := loadSeed(t, name)
		if s.Scale != want[name].scale || len(s.Protocols) != want[name].protos {
			t.Errorf("%s: scale %d, %d protocols; want %v", name, s.Scale, len(s.Protocols), want[name])
		}
		var total float64
		for _, p := range s.Protocols {
			total += p.Weight
			if sum := floatSum(p.Classes[:]); math.Abs(sum-1) > 1e-3 {
				t.Errorf("%s: protocol %d classes sum to %v", name, p.Value, sum)
			}
		}
		if math.Abs(total-1) > 1e-3 {
			t.Errorf("%s: protocol weights sum to %v", name, total)
		}
		if s.SrcTree[32] != (TreeLevel{0, 1, s.SrcTree[31].Skew}) || s.Correlation[1] == 0 || s.SrcNest != 4 {
			t.Errorf("%s: trees not read: src[32] %v, corr[1] %v, nest %d", name, s.SrcTree[32], s.Correlation[1], s.SrcNest)
		}
	}
	if _, err := LoadSeed("acl9"); err == nil {
		t.Error("LoadSeed(acl9) succeeded")
	}
}

func floatSum(v []float64) (s float64) {
	for _, x := range v {
		s += x
	}
	return s
}

func TestParseSeedErrors(t *testing.T) {
	data, err := seedFiles.ReadFile("seeds/acl1_seed")
	if err != nil {
		t.Fatal(err)
	}
	orig := string(data)
	lines := strings.Split(orig, "\n")
	lineOf := func(prefix string) int { // 1-based line of the first line with prefix
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q", prefix)
		return 0
	}
	tcp := lineOf("6\t0.87312412")
	for _, tc := range []struct {
		name, text, section string
		line                int
	}{
		{"short prots line", strings.Replace(orig, "6\t0.87312412\t", "6\t", 1), "-prots", tcp},
		{"bad port", strings.Replace(orig, "1600:1649", "1649:1600", 1), "-dpar", lineOf("0.08235294\t1600:1649")},
		{"unknown section", strings.Replace(orig, "-extra", "-extras", 1), "", lineOf("-extra")},
		{"repeated section", strings.Replace(orig, "-pcorr", "-snest", 1), "-snest", lineOf("-pcorr")},
		{"no pcorr", orig[:strings.Index(orig, "-pcorr")], "-pcorr", 0},
		{"unclosed", strings.TrimSuffix(strings.TrimSpace(orig), "#"), "-pcorr", 0},
		{"empty dpar", orig[:strings.Index(orig, "-dpar")] + "-dpar\n#\n" + orig[strings.Index(orig, "-dpem"):], "-prots", tcp},
	} {
		_, err := ParseSeed("acl1", strings.NewReader(tc.text))
		var se *SeedError
		if !errors.As(err, &se) || se.Section != tc.section || se.Line != tc.line {
			t.Errorf("%s: got %v; want section %q line %d", tc.name, err, tc.section, tc.line)
		} else if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "seed acl1: ") {
			t.Errorf("%s: error %q is not one line naming the seed", tc.name, err)
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	s := loadSeed(t, "acl1")
	a := Generate(s, 1000, 1, DefaultOptions)
	if !slices.Equal(a, Generate(s, 1000, 1, DefaultOptions)) {
		t.Error("same seed, different sets")
	}
	if slices.Equal(a, Generate(s, 1000, 2, DefaultOptions)) {
		t.Error("seeds 1 and 2 give the same set")
	}
	if slices.Equal(a, Generate(s, 1000, 1, neutral)) {
		t.Error("options make no difference")
	}
}

// The bands hold what ClassBench's own db_generator gives for these
// arguments (-bc SEED 1000 2 -0.5 0.1), counted without flags.
func TestRuleCounts(t *testing.T) {
	bands := map[string][2]int{"acl1": {880, 980}, "fw1": {740, 900}, "ipc1": {920, 995}}
	for _, name := range Seeds {
		s := loadSeed(t, name)
		for seed := int64(1); seed <= 3; seed++ {
			if n := len(Generate(s, 1000, seed, DefaultOptions)); n < bands[name][0] || n > bands[name][1] {
				t.Errorf("%s seed %d: %d rules, want %v", name, seed, n, bands[name])
			}
		}
	}
}

// kindOf recognises a port range's kind; in the embedded seeds no arbitrary
// range coincides with WC, HI or LO, and exact ports are single ports.
func kindOf(p PortRange) portKind {
	switch {
	case p == wildcardPorts:
		return kindWC
	case p == highPorts:
		return kindHI
	case p == lowPorts:
		return kindLO
	case p.Lo == p.Hi:
		return kindEM
	}
	return kindAR
}

func classOf(r Rule) PortClass {
	k := [2]portKind{kindOf(r.SrcPort), kindOf(r.DstPort)}
	return PortClass(slices.Index(classKinds[:], k))
}

// expected returns the seed's protocol, class and (source, destination)
// length-pair distributions, unsmoothed.
func expected(s *Seed) (proto map[uint8]float64, class [NumClasses]float64, pairs map[[2]int]float64) {
	proto, pairs = map[uint8]float64{}, map[[2]int]float64{}
	var pw float64
	for _, p := range s.Protocols {
		pw += p.Weight
	}
	for _, p := range s.Protocols {
		proto[p.Value] = p.Weight / pw
		cw := floatSum(p.Classes[:])
		for c, w := range p.Classes {
			pc := proto[p.Value] * w / cw
			class[c] += pc
			var tw float64
			for _, tl := range s.PrefixPairs[c] {
				tw += tl.Weight
			}
			for _, tl := range s.PrefixPairs[c] {
				var sw float64
				for _, l := range tl.Src {
					sw += l.Weight
				}
				for _, l := range tl.Src {
					pairs[[2]int{l.Len, tl.Total - l.Len}] += pc * tl.Weight / tw * l.Weight / sw
				}
			}
		}
	}
	return proto, class, pairs
}

// distance reports how far rules are from the seed's distributions: the
// largest difference in the share of a protocol and of a port-pair class,
// the total variation distance of the length pairs, and the largest
// difference in mean source or destination length.
func distance(s *Seed, rules []Rule) (proto, class, pairs, mean float64) {
	wantProto, wantClass, wantPairs := expected(s)
	gotProto, gotPairs := map[uint8]float64{}, map[[2]int]float64{}
	var gotClass [NumClasses]float64
	var got, want [2]float64 // mean lengths
	share := 1 / float64(len(rules))
	for _, r := range rules {
		gotProto[r.Proto] += share
		gotClass[classOf(r)] += share
		gotPairs[[2]int{r.Src.Bits(), r.Dst.Bits()}] += share
		got[0] += float64(r.Src.Bits()) * share
		got[1] += float64(r.Dst.Bits()) * share
	}
	for p, w := range wantProto {
		proto = max(proto, math.Abs(gotProto[p]-w))
	}
	for c, w := range wantClass {
		class = max(class, math.Abs(gotClass[c]-w))
	}
	for k, w := range wantPairs {
		pairs += math.Abs(gotPairs[k]-w) / 2
		want[0] += float64(k[0]) * w
		want[1] += float64(k[1]) * w
	}
	for k, w := range gotPairs {
		if _, ok := wantPairs[k]; !ok {
			pairs += w / 2
		}
	}
	return proto, class, pairs, max(math.Abs(got[0]-want[0]), math.Abs(got[1]-want[1]))
}

func TestDistributions(t *testing.T) {
	for _, name := range Seeds {
		s := loadSeed(t, name)
		// The draws themselves, before duplicates go.
		m := newModel(s, neutral)
		r := rand.New(rand.NewPCG(1, 2))
		drawn := make([]Rule, 10000)
		for i := range drawn {
			d := m.draw(r)
			drawn[i] = d.rule()
		}
		p, c, l, mean := distance(s, drawn)
		t.Logf("%s drawn: protocol %.3f, class %.3f, length pairs %.3f, mean length %.2f", name, p, c, l, mean)
		if p > 0.015 || c > 0.015 || l > 0.05 || mean > 0.3 {
			t.Errorf("%s: draws stray from the seed", name)
		}
		// The generated set: removing duplicates thins out the least
		// specific filters (short prefixes, wildcards), more in some seeds
		// than in others. db_generator's own 10K sets (-bc SEED 10000 0 0 0)
		// stray as far: up to 0.035 (protocol, class, ipc1), 0.07 (length
		// pairs, fw1) and 1.8 bits (mean length, fw1).
		p, c, l, mean = distance(s, big10K(t, name))
		t.Logf("%s set: protocol %.3f, class %.3f, length pairs %.3f, mean length %.2f", name, p, c, l, mean)
		if p > 0.05 || c > 0.05 || l > 0.1 || mean > 2 {
			t.Errorf("%s: generated set strays from the seed", name)
		}
	}
}

func TestScopes(t *testing.T) {
	s := loadSeed(t, "acl1")
	mean := func(o Options) (total, wild float64) {
		rules := Generate(s, 1000, 1, o)
		for _, r := range rules {
			total += float64(r.Src.Bits()+r.Dst.Bits()) / float64(len(rules))
			if classOf(r) == 0 {
				wild += 1 / float64(len(rules))
			}
		}
		return total, wild
	}
	narrowLen, narrowWild := mean(Options{AddressScope: -1, ApplicationScope: -1})
	wideLen, wideWild := mean(Options{AddressScope: 1, ApplicationScope: 1})
	if narrowLen <= wideLen+1 || narrowWild >= wideWild {
		t.Errorf("scope -1: length %.2f, wc_wc %.3f; scope 1: length %.2f, wc_wc %.3f", narrowLen, narrowWild, wideLen, wideWild)
	}
}

func TestUniqueAndOrdered(t *testing.T) {
	for _, name := range Seeds {
		for _, rules := range [][]Rule{Generate(loadSeed(t, name), 1000, 1, DefaultOptions), big10K(t, name)} {
			seen := map[Rule]bool{}
			prev := -1
			for i, r := range rules {
				if seen[r] {
					t.Fatalf("%s: rule %d repeats an earlier one: %v", name, i, r)
				}
				seen[r] = true
				if !r.Src.Addr().Is4() || r.Src != r.Src.Masked() || r.Dst != r.Dst.Masked() ||
					r.SrcPort.Lo > r.SrcPort.Hi || r.DstPort.Lo > r.DstPort.Hi ||
					(r.ProtoMask != 0xff || r.Proto == 0) && r != (Rule{r.Src, r.Dst, r.SrcPort, r.DstPort, 0, 0}) {
					t.Fatalf("%s: malformed rule %d: %v", name, i, r)
				}
				d := draft{proto: r.Proto, sport: r.SrcPort, dport: r.DstPort, slen: r.Src.Bits(), dlen: r.Dst.Bits()}
				if sc := d.tuple().scope(); sc < prev {
					t.Fatalf("%s: rule %d (scope %d) after scope %d", name, i, sc, prev)
				} else {
					prev = sc
				}
			}
		}
	}
}

// nesting is the largest number of distinct prefixes containing one address.
func nesting(rules []Rule, field func(Rule) netip.Prefix) int {
	set := map[netip.Prefix]bool{}
	for _, r := range rules {
		set[field(r)] = true
	}
	deepest := 0
	for p := range set {
		n := 0
		for q := range set {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				n++
			}
		}
		deepest = max(deepest, n)
	}
	return deepest
}

// The source tree keeps nesting within -snest, except that it lets a /32
// sit under a /31 (so one more).
func TestSourceNesting(t *testing.T) {
	for _, name := range Seeds {
		s := loadSeed(t, name)
		got := nesting(Generate(s, 1000, 1, DefaultOptions), func(r Rule) netip.Prefix { return r.Src })
		if got > s.SrcNest+1 || got < 2 {
			t.Errorf("%s: source prefixes nest %d deep, -snest %d", name, got, s.SrcNest)
		}
	}
}

func TestSmoothing(t *testing.T) {
	spike := []TotalLength{{Total: 40, Weight: 1, Src: []LengthWeight{{20, 1}}}}
	flat := newLengthTable(spike, 0)
	if s, d := flat.pick(0.3, 0.7); s != 20 || d != 20 {
		t.Errorf("unsmoothed pick: %d/%d", s, d)
	}
	sm := newLengthTable(spike, 2)
	weight := func(c cdf, i int) float64 {
		w := c[i]
		if i > 0 {
			w -= c[i-1]
		}
		return w / c.total()
	}
	for total, want := range map[int]float64{37: 0, 38: 1. / 16, 39: 4. / 16, 40: 6. / 16, 41: 4. / 16, 42: 1. / 16, 43: 0} {
		if got := weight(sm.total, total); math.Abs(got-want) > 1e-9 {
			t.Errorf("smoothed total %d: weight %v, want %v", total, got, want)
		}
	}
	// Total 41 (one away): the extra bit goes to either address.
	if a, b := weight(sm.src[41], 20), weight(sm.src[41], 21); a != 0.5 || b != 0.5 {
		t.Errorf("source lengths at total 41: %v %v", a, b)
	}
}

func TestBalanceTop(t *testing.T) {
	var shape treeShape
	for d := range shape {
		shape[d] = TreeLevel{OneChild: 1, Skew: 1}
	}
	shape.balanceTop(5) // 2 + 2 spent on depths 0 and 1, 1 left for depth 2
	want := []TreeLevel{{0, 1, 0}, {0, 1, 0}, {0, 1, 0.5}, {1, 0, 1}}
	if !slices.Equal(shape[:4], want) {
		t.Errorf("balanced top: %v, want %v", shape[:4], want)
	}
	shape = treeShape{{OneChild: 0.5, TwoChildren: 0.5, Skew: 0}}
	shape.balanceTop(0.5) // imbalance 1: half of it goes by splitting
	if lv := shape[0]; math.Abs(lv.TwoChildren-0.75) > 1e-9 || lv.Skew != 0 {
		t.Errorf("partly balanced depth: %v", lv)
	}
}
