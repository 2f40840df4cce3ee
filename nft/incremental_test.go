package nft

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// A small world of base chains that tests change rule by rule, as the
// Reader's Follow would, to compare results changed in place with whole
// compiles.
type world struct {
	chains []*Chain
	edits  []ruleEdit
	sets   map[string]*setInfo
	epoch  uint64
}

func (w *world) ruleset() *Ruleset {
	rs := &Ruleset{Dev: "lo", Ifindex: 1, chains: map[string]*Chain{}, sets: map[string]map[string]*setInfo{"t": w.sets},
		setsGen: 1, editsEpoch: w.epoch, edits: slices.Clone(w.edits)}
	for _, c := range w.chains {
		cc := *c
		cc.Rules = slices.Clone(c.Rules)
		rs.Base = append(rs.Base, &cc)
		rs.chains[c.Table+"/"+c.Name] = &cc
	}
	return rs
}

func (w *world) chain(name string) *Chain {
	for _, c := range w.chains {
		if c.Name == name {
			return c
		}
	}
	panic(name)
}

func (w *world) insert(chain string, i int, r *ruleInfo) {
	c := w.chain(chain)
	c.Rules = slices.Insert(c.Rules, i, r)
	w.edits = append(w.edits, ruleEdit{rule: r, chain: "t/" + chain, added: true})
}

func (w *world) del(chain string, r *ruleInfo) {
	c := w.chain(chain)
	c.Rules = slices.DeleteFunc(c.Rules, func(x *ruleInfo) bool { return x == r })
	w.edits = append(w.edits, ruleEdit{rule: r, chain: "t/" + chain})
}

func baseChain(name string, policy uint32, prio int32, rules ...*ruleInfo) *Chain {
	return &Chain{Table: "t", Name: name, Base: true, Policy: policy, Priority: prio, Rules: rules}
}

func port(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// tcpPorts is `tcp dport lo-hi` (or `tcp dport lo`) as nft writes it.
func tcpPorts(lo, hi uint16) []exprInfo {
	x := []exprInfo{
		{E: &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}},
		{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}}},
		{E: &expr.Payload{OperationType: expr.PayloadLoad, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: 1}},
	}
	if lo == hi {
		return append(x, exprInfo{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(lo)}})
	}
	return append(x, exprInfo{E: &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: port(lo), ToData: port(hi)}})
}

func tcpRule(chain string, h uint64, lo, hi uint16, v expr.VerdictKind) *ruleInfo {
	return &ruleInfo{Table: "t", Chain: chain, Handle: h, Exprs: append(tcpPorts(lo, hi), exprInfo{E: &expr.Verdict{Kind: v}})}
}

// vmapRule is `tcp dport vmap @set`.
func vmapRule(chain string, h uint64, set string) *ruleInfo {
	return &ruleInfo{Table: "t", Chain: chain, Handle: h, Exprs: append(tcpPorts(0, 0)[:3],
		exprInfo{E: &expr.Lookup{SourceRegister: 1, SetName: set, IsDestRegSet: true, DestRegister: 0}})}
}

func vmapSet(ports []uint16, verdicts []expr.VerdictKind) *setInfo {
	si := &setInfo{Set: &nftables.Set{Name: "m", IsMap: true, KeyType: nftables.TypeInetService}}
	for i, p := range ports {
		si.Elements = append(si.Elements, nftables.SetElement{Key: port(p), VerdictData: &expr.Verdict{Kind: verdicts[i]}})
	}
	return si
}

var roomy = Limits{Subtables: 1000, Flows: 100000, Rules: 100000}

// install compiles rs and installs the result, as the daemon does; it
// says whether the result was changed in place.
func install(cp *Compiler, rs *Ruleset) bool {
	cp.TakeCompiles()
	cp.Compile(rs, roomy)
	cp.Delta()
	cp.Installed()
	_, inPlace := cp.TakeCompiles()
	return inPlace == 1
}

// sameAsWhole fails the test unless the installed parts and the counts are
// what a whole compile of rs, keeping the installed levels, gives.
func sameAsWhole(t *testing.T, what string, cp *Compiler, rs *Ruleset) {
	t.Helper()
	levels := map[string]uint32{}
	var got []string
	for r := range cp.installed {
		levels[r.Name] = r.Level
		got = append(got, fmt.Sprintf("%s@%d %s", r.Name, r.Level, r.Digest))
	}
	lim := roomy
	lim.Level = func(n string) (uint32, bool) { l, ok := levels[n]; return l, ok }
	want, statuses := new(Compiler).Compile(rs, lim)
	var w []string
	for _, r := range want {
		w = append(w, fmt.Sprintf("%s@%d %s", r.Name, r.Level, r.Digest))
	}
	slices.Sort(got)
	slices.Sort(w)
	off := 0
	for _, st := range statuses {
		if st.Offloaded {
			off++
		}
	}
	n, gotOff := cp.Counts()
	if !slices.Equal(got, w) || n != len(statuses) || gotOff != off {
		t.Errorf("%s: installed %v (%d rules, %d offloaded), a whole compile %v (%d, %d)", what, got, n, gotOff, w, len(statuses), off)
	}
}

// Long for its table: one case per delicate change, then their loop.
// TestChangeInPlace: results changed in place are a whole compile's, for
// rules that vmaps, port ranges, drop policies and several base chains
// make delicate; appends stay in place.
func TestChangeInPlace(t *testing.T) {
	t.Run("before a vmap", func(t *testing.T) {
		// The vmap's parts are on three levels: a rule added before it
		// goes below the lowest.
		w := &world{epoch: 1, sets: map[string]*setInfo{"m": vmapSet([]uint16{22, 80, 443},
			[]expr.VerdictKind{expr.VerdictDrop, expr.VerdictAccept, expr.VerdictReturn})}}
		w.chains = []*Chain{baseChain("in", nfAccept, 0, tcpRule("in", 1, 1, 1, expr.VerdictDrop), vmapRule("in", 2, "m"))}
		cp := new(Compiler)
		install(cp, w.ruleset())
		w.insert("in", 1, tcpRule("in", 3, 22, 22, expr.VerdictAccept))
		rs := w.ruleset()
		install(cp, rs)
		sameAsWhole(t, "added before a vmap", cp, rs)
	})
	t.Run("vmap with continue", func(t *testing.T) {
		for _, vs := range [][]expr.VerdictKind{{expr.VerdictContinue, expr.VerdictDrop}, {expr.VerdictDrop, expr.VerdictContinue}} {
			w := &world{epoch: 2, sets: map[string]*setInfo{"m": vmapSet([]uint16{22, 80}, vs)}}
			w.chains = []*Chain{baseChain("in", nfAccept, 0, tcpRule("in", 1, 1, 1, expr.VerdictDrop))}
			cp := new(Compiler)
			install(cp, w.ruleset())
			w.insert("in", 1, vmapRule("in", 2, "m"))
			rs := w.ruleset()
			install(cp, rs)
			sameAsWhole(t, fmt.Sprint("vmap ", vs), cp, rs)
		}
	})
	t.Run("appends", func(t *testing.T) {
		w := &world{epoch: 3}
		w.chains = []*Chain{baseChain("in", nfAccept, 0, tcpRule("in", 1, 1, 1, expr.VerdictDrop))}
		cp := new(Compiler)
		install(cp, w.ruleset())
		for h := uint64(2); h <= 200; h++ {
			w.insert("in", len(w.chain("in").Rules), tcpRule("in", h, uint16(h), uint16(h), expr.VerdictDrop))
			rs := w.ruleset()
			if !install(cp, rs) {
				t.Fatalf("append %d compiled whole", h)
			}
			if h%50 == 0 {
				sameAsWhole(t, fmt.Sprint("append ", h), cp, rs)
			}
		}
	})
	t.Run("port ranges", func(t *testing.T) {
		w := &world{epoch: 4}
		claimer := tcpRule("in", 1, 1000, 2000, expr.VerdictDrop)
		w.chains = []*Chain{baseChain("in", nfAccept, 0, tcpRule("in", 9, 1, 1, expr.VerdictAccept), claimer, tcpRule("in", 8, 2, 2, expr.VerdictAccept))}
		cp := new(Compiler)
		install(cp, w.ruleset())
		for _, step := range []struct {
			what   string
			change func()
		}{
			{"after the rule holding the range", func() { w.insert("in", 2, tcpRule("in", 2, 1500, 2600, expr.VerdictAccept)) }},
			{"before it", func() { w.insert("in", 1, tcpRule("in", 3, 1500, 2600, expr.VerdictAccept)) }},
			{"it deleted", func() { w.del("in", claimer) }},
		} {
			step.change()
			rs := w.ruleset()
			install(cp, rs)
			sameAsWhole(t, step.what, cp, rs)
		}
	})
	t.Run("drop policy", func(t *testing.T) {
		w := &world{epoch: 5}
		last := tcpRule("in", 2, 2, 2, expr.VerdictAccept)
		w.chains = []*Chain{baseChain("in", nfDrop, 0, tcpRule("in", 1, 1, 1, expr.VerdictAccept), last)}
		cp := new(Compiler)
		install(cp, w.ruleset())
		w.del("in", last)
		rs := w.ruleset()
		install(cp, rs)
		sameAsWhole(t, "the last rule deleted", cp, rs)
		// A whole compile keeps the policy's part where it is.
		cp.fast = nil
		cp.Compile(rs, roomy)
		if add, remove, _ := cp.Delta(); len(add)+len(remove) > 0 {
			t.Errorf("a whole compile after it moves parts: +%d -%d", len(add), len(remove))
		}
	})
	t.Run("two base chains", func(t *testing.T) {
		w := &world{epoch: 6}
		w.chains = []*Chain{
			baseChain("z", nfAccept, -10, tcpRule("z", 1, 1, 1, expr.VerdictDrop), tcpRule("z", 2, 2, 2, expr.VerdictDrop)),
			baseChain("a", nfAccept, 10, tcpRule("a", 3, 3, 3, expr.VerdictDrop), tcpRule("a", 4, 4, 4, expr.VerdictDrop)),
		}
		cp := new(Compiler)
		install(cp, w.ruleset())
		w.insert("z", 1, tcpRule("z", 5, 5, 5, expr.VerdictAccept))
		w.insert("a", 1, tcpRule("a", 6, 6, 6, expr.VerdictAccept))
		rs := w.ruleset()
		install(cp, rs)
		sameAsWhole(t, "one added in each", cp, rs)
	})
}

// ipPrefixRule is `ip saddr S/sb ip daddr D/db tcp dport lo-hi` with
// verdict v, as nft writes it on a netdev chain.
func ipPrefixRule(chain string, h uint64, s uint32, sb uint8, d uint32, db uint8, lo, hi uint16, v expr.VerdictKind) *ruleInfo {
	x := []exprInfo{
		{E: &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1}},
		{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x08, 0x00}}},
	}
	prefix := func(off uint32, a uint32, bits uint8) {
		mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-bits))
		x = append(x, exprInfo{E: &expr.Payload{OperationType: expr.PayloadLoad, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4, DestRegister: 1}})
		if bits < 32 {
			x = append(x, exprInfo{E: &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)}})
		}
		x = append(x, exprInfo{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint32(nil, a&^(1<<(32-uint32(bits))-1))}})
	}
	prefix(12, s, sb)
	prefix(16, d, db)
	x = append(x, tcpPorts(lo, hi)...)
	return &ruleInfo{Table: "t", Chain: chain, Handle: h, Exprs: append(x, exprInfo{E: &expr.Verdict{Kind: v}})}
}

// TestMergedChangesInPlace: rules whose prefixes share merged subtables
// (and whose flows collide, so that some take their later choices) added
// and deleted at random places give, changed in place, a whole compile's
// result.
func TestMergedChangesInPlace(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	w := &world{chains: []*Chain{baseChain("in", 1, 0)}}
	cp := new(Compiler)
	install(cp, w.ruleset())
	inPlace, h := 0, uint64(1)
	for step := 0; step < 300; step++ {
		c := w.chain("in")
		if len(c.Rules) > 0 && rng.Intn(3) == 0 {
			w.del("in", c.Rules[rng.Intn(len(c.Rules))])
		} else {
			lo := uint16(rng.Intn(4) * 100)
			r := ipPrefixRule("in", h, 10<<24|uint32(rng.Intn(64)), uint8(26+rng.Intn(7)), 10<<24|1<<16|uint32(rng.Intn(64)),
				uint8(26+rng.Intn(7)), lo, lo+uint16(rng.Intn(2)*50), []expr.VerdictKind{expr.VerdictDrop, expr.VerdictAccept}[rng.Intn(2)])
			h++
			w.insert("in", rng.Intn(len(c.Rules)+1), r)
		}
		rs := w.ruleset()
		if install(cp, rs) {
			inPlace++
		}
		sameAsWhole(t, fmt.Sprintf("step %d", step), cp, rs)
		if t.Failed() {
			return
		}
	}
	if inPlace < 50 {
		t.Fatalf("%d of 300 changes in place: the test no longer exercises them", inPlace)
	}
	t.Logf("%d of 300 changes in place", inPlace)
}

// TestChangeInPlaceBeforeTakeAll: a chain ending in a rule that takes
// every packet (ClassBench's last rule) is changed in place before it, and
// a rule added after it, never reached, is a whole compile's result too.
func TestChangeInPlaceBeforeTakeAll(t *testing.T) {
	all := &ruleInfo{Table: "t", Chain: "in", Handle: 100, Exprs: []exprInfo{{E: &expr.Verdict{Kind: expr.VerdictDrop}}}}
	w := &world{chains: []*Chain{baseChain("in", 1, 0, tcpRule("in", 1, 80, 80, expr.VerdictAccept),
		tcpRule("in", 2, 1000, 2000, expr.VerdictDrop), all)}}
	cp := new(Compiler)
	install(cp, w.ruleset())
	w.insert("in", 1, tcpRule("in", 3, 443, 443, expr.VerdictAccept))
	rs := w.ruleset()
	if !install(cp, rs) {
		t.Error("a rule added before the one that takes every packet was not changed in place")
	}
	sameAsWhole(t, "added before", cp, rs)
	w.insert("in", 4, tcpRule("in", 4, 22, 22, expr.VerdictAccept))
	rs = w.ruleset()
	install(cp, rs)
	sameAsWhole(t, "added after", cp, rs)
}
