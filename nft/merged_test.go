package nft

// The merged (address-ranged) subtables, the widened fragment punts and
// the flows rules claim: the cases that once went wrong.

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/google/nftables/expr"

	"github.com/xdpflow/xdpflow/rule"
)

// etherDaddr is `ether daddr mac` as nft writes it on a netdev chain.
func etherDaddr(mac [6]byte) []exprInfo {
	return []exprInfo{
		{E: &expr.Payload{OperationType: expr.PayloadLoad, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 6, DestRegister: 1}},
		{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mac[:]}},
	}
}

// macPrefixRule is `ether daddr mac ip saddr S/sb ip daddr D/db tcp dport
// lo-hi` with verdict v.
func macPrefixRule(chain string, h uint64, mac [6]byte, s uint32, sb uint8, d uint32, db uint8, lo, hi uint16, v expr.VerdictKind) *ruleInfo {
	r := ipPrefixRule(chain, h, s, sb, d, db, lo, hi, v)
	r.Exprs = append(etherDaddr(mac), r.Exprs...)
	return r
}

// narrowWordsOf is how many key words mask covers.
func narrowWordsOf(mask *rule.Key) int {
	n := 0
	for _, w := range rule.KeyWords(mask) {
		if w != 0 {
			n++
		}
	}
	return n
}

// TestMergedChoiceStaysNarrow: a merged match (its IPv4 prefixes
// checked as ranges, which only flows_ranged, a narrow subtable's map,
// holds) whose first flow an earlier rule holds takes its next choice;
// every choice with address prefixes must still be narrow (at most 6 key
// words), or maps refuses the flow ("address ranges need a narrow ranged
// subtable") and the whole nft set fails to install. The port prefix
// portPrefixed adds to the mask is a word of its own (src_port/dst_port),
// which merged()'s narrow check never saw.
func TestMergedChoiceStaysNarrow(t *testing.T) {
	mac := [6]byte{0x02, 0, 0, 0, 0, 0x99}
	w := &world{chains: []*Chain{baseChain("in", nfAccept, 0,
		macPrefixRule("in", 1, mac, 10<<24, 12, 10<<24|1<<16, 12, 1000, 1999, expr.VerdictDrop),
		macPrefixRule("in", 2, mac, 10<<24|16<<16, 12, 10<<24|1<<16, 12, 2000, 2999, expr.VerdictAccept))}}
	out, statuses := new(Compiler).Compile(w.ruleset(), roomy)
	for _, st := range statuses {
		if !st.Offloaded {
			t.Fatalf("%s not offloaded: %s", st.Name, st.Reason)
		}
	}
	for _, r := range out {
		for _, m := range append([]rule.Match{r.Match}, r.More...) {
			if (m.SrcAddrs.Set() || m.DstAddrs.Set()) && narrowWordsOf(&m.Mask) > 6 { // XF_NARROW_WORDS
				t.Errorf("part %s: a match with address prefixes (src %v dst %v) in a mask of %d words: no narrow subtable, so maps refuses its flow",
					r.Name, m.SrcAddrs, m.DstAddrs, narrowWordsOf(&m.Mask))
			}
		}
	}
	if t.Failed() {
		for _, r := range out {
			t.Logf("%s@%d %v", r.Name, r.Level, r.Keys)
		}
	}
}

// anyRule is a rule of the random in-place test: meta protocol (IPv4 or
// IPv6), optional prefixes of the source and destination, l4proto tcp or
// udp with a destination port or range, or no transport at all.
func anyRule(rng *rand.Rand, chain string, h uint64) *ruleInfo {
	v6 := rng.Intn(4) == 0
	var x []exprInfo
	proto, alen, soff, doff := []byte{0x08, 0x00}, 4, uint32(12), uint32(16)
	if v6 {
		proto, alen, soff, doff = []byte{0x86, 0xdd}, 16, 8, 24
	}
	x = append(x, exprInfo{E: &expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1}},
		exprInfo{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: proto}})
	noAddrs := rng.Intn(6) == 0 // then no protocol either: IPv4 and IPv6
	if noAddrs {
		x = nil
	}
	prefix := func(off uint32, base []byte, bits int) {
		mask := make([]byte, alen)
		for i := 0; i < bits; i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		val := make([]byte, alen)
		for i := range val {
			val[i] = base[i] & mask[i]
		}
		x = append(x, exprInfo{E: &expr.Payload{OperationType: expr.PayloadLoad, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(alen), DestRegister: 1}})
		if bits < alen*8 {
			x = append(x, exprInfo{E: &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(alen), Mask: mask, Xor: make([]byte, alen)}})
		}
		x = append(x, exprInfo{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: val}})
	}
	addr := func() []byte {
		b := make([]byte, alen)
		b[0], b[1], b[2], b[3] = 10, byte(rng.Intn(2)), byte(rng.Intn(4)<<6), byte(rng.Intn(256))
		return b
	}
	if !noAddrs && rng.Intn(4) != 0 {
		prefix(soff, addr(), 4+rng.Intn(29))
	}
	if !noAddrs && rng.Intn(2) == 0 {
		prefix(doff, addr(), 4+rng.Intn(29))
	}
	if noAddrs || rng.Intn(5) != 0 {
		l4 := []byte{6, 17}[rng.Intn(2)]
		lo := uint16(rng.Intn(8) * 50)
		hi := lo + uint16(rng.Intn(3)*30)
		x = append(x, exprInfo{E: &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}},
			exprInfo{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}}},
			exprInfo{E: &expr.Payload{OperationType: expr.PayloadLoad, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: 1}})
		if lo == hi && rng.Intn(2) == 0 {
			x = append(x, exprInfo{E: &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: port(lo + 7)}})
		} else if lo == hi {
			x = append(x, exprInfo{E: &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(lo)}})
		} else {
			x = append(x, exprInfo{E: &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: port(lo), ToData: port(hi)}})
		}
	}
	v := []expr.VerdictKind{expr.VerdictDrop, expr.VerdictAccept}[rng.Intn(2)]
	return &ruleInfo{Table: "t", Chain: chain, Handle: h, Exprs: append(x, exprInfo{E: &expr.Verdict{Kind: v}})}
}

// TestRandomChangesInPlace: TestMergedChangesInPlace over a wider
// mix (IPv4 and IPv6, prefixes of every length or none, tcp and udp, rules
// without transport fields, two base chains), so that merged flows, port
// prefixes and fragment punts held by earlier rules all meet changes in
// place; each must be a whole compile's result.
func TestRandomChangesInPlace(t *testing.T) {
	for seed := int64(1); seed <= 30; seed++ {
		rng := rand.New(rand.NewSource(seed))
		w := &world{epoch: uint64(seed), chains: []*Chain{baseChain("a", nfAccept, -10), baseChain("z", []uint32{nfAccept, nfDrop}[seed%2], 10)}}
		cp := new(Compiler)
		install(cp, w.ruleset())
		inPlace, h := 0, uint64(1)
		for step := 0; step < 200; step++ {
			name := []string{"a", "z"}[rng.Intn(2)]
			c := w.chain(name)
			if len(c.Rules) > 0 && rng.Intn(3) == 0 {
				w.del(name, c.Rules[rng.Intn(len(c.Rules))])
			} else if seed > 20 && rng.Intn(25) == 0 {
				// A rule that takes every packet, at the end or not.
				all := &ruleInfo{Table: "t", Chain: name, Handle: h, Exprs: []exprInfo{{E: &expr.Verdict{Kind: []expr.VerdictKind{expr.VerdictDrop, expr.VerdictAccept}[rng.Intn(2)]}}}}
				at := len(c.Rules)
				if rng.Intn(3) == 0 {
					at = rng.Intn(len(c.Rules) + 1)
				}
				w.insert(name, at, all)
				h++
			} else {
				w.insert(name, rng.Intn(len(c.Rules)+1), anyRule(rng, name, h))
				h++
			}
			rs := w.ruleset()
			if install(cp, rs) {
				inPlace++
			}
			sameAsWhole(t, fmt.Sprintf("seed %d step %d", seed, step), cp, rs)
			if t.Failed() {
				return
			}
		}
		t.Logf("seed %d: %d of 200 in place", seed, inPlace)
	}
}

// TestDescribeIPv4ByL3Proto: a part's keys (what `flow show` lists)
// show an IPv4 match's addresses as IPv4. describe decides IPv4 by
// eth_type alone, and an nft match keyed by l3_proto (every `ip saddr`
// rule: one entry for tagged and untagged frames) has none, so its merged
// prefix 10.0.0.0/12 shows as the IPv6 prefix a00::/12.
func TestDescribeIPv4ByL3Proto(t *testing.T) {
	w := &world{chains: []*Chain{baseChain("in", nfAccept, 0,
		ipPrefixRule("in", 1, 10<<24, 12, 10<<24|1<<16, 16, 1000, 1999, expr.VerdictDrop))}}
	out, _ := new(Compiler).Compile(w.ruleset(), roomy)
	for _, kv := range out[0].Keys {
		if kv.Name == "src_ip" && kv.Value != "10.0.0.0/12" {
			t.Errorf("part %s shows src_ip %v, want 10.0.0.0/12 (keys %v)", out[0].Name, kv.Value, out[0].Keys)
		}
	}
}

// TestWantedGoesWithItsRule: fastState.wanted keeps a flow once any
// rule found it held, after that rule is gone: deleting the rule that
// found it held, then the rule holding it, compiles whole although no rule
// left would take the flow (a whole compile moves nothing else). Results
// stay right; changes in place are lost for good on such flows (every
// later deletion of a holder of a widened fragment punt, say).
func TestWantedGoesWithItsRule(t *testing.T) {
	a := ipPrefixRule("in", 1, 10<<24, 12, 10<<24|1<<16, 12, 1000, 1999, expr.VerdictDrop)
	b := ipPrefixRule("in", 2, 10<<24|16<<16, 12, 10<<24|1<<16, 12, 2000, 2999, expr.VerdictAccept)
	w := &world{epoch: 7, chains: []*Chain{baseChain("in", nfAccept, 0, a, b)}}
	cp := new(Compiler)
	install(cp, w.ruleset())
	w.del("in", b)
	if rs := w.ruleset(); !install(cp, rs) {
		t.Fatal("deleting the later rule compiled whole")
	}
	w.del("in", a)
	rs := w.ruleset()
	if !install(cp, rs) {
		t.Error("deleting the last rule compiled whole: the flow it held is still `wanted` by a rule deleted before")
	}
	sameAsWhole(t, "both deleted", cp, rs)
}
