package maps_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/refmodel"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// The differential tests run inside a namespace whose loopback is the
// ingress device (BPF_PROG_TEST_RUN's default) and whose veth pair r1/r2
// are redirect targets.
const ingressDev = "lo"

// harness is a loaded (unattached) program with its table and the model.
type harness struct {
	t     testing.TB
	objs  *bpf.XdpflowObjects
	table *maps.Table
	model refmodel.Table
	ids   map[string]maps.RuleID // "prio/handle" -> id
	rng   *rand.Rand
	// seen counts model outcomes over the run, so the test can show it
	// exercised every verdict.
	seen map[string]int
	// deferred tables return from changes before freed slots are reusable
	// (the daemon's mode); reopen keeps the mode.
	deferred bool
}

func newHarness(t testing.TB, seed int64, maxFlows uint32) *harness {
	return newHarnessCache(t, seed, maxFlows, true)
}

// newHarnessCache loads the program with or without its flow cache.
func newHarnessCache(t testing.TB, seed int64, maxFlows uint32, cache bool) *harness {
	t.Helper()
	testutil.RequireRoot(t)
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	if !cache {
		if err := spec.Variables["xf_cache_disabled"].Set(uint32(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := maps.SizeSpec(spec, maps.DefaultCacheEntries); err != nil {
		t.Fatal(err)
	}
	if err := maps.SizeTables(spec, maxFlows, 4096); err != nil {
		t.Fatal(err)
	}
	objs := &bpf.XdpflowObjects{}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { objs.Close() })
	if err := maps.Init(&objs.XdpflowMaps, maps.MaxSubtables, 1, 0); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, objs: objs, ids: map[string]maps.RuleID{}, rng: rand.New(rand.NewSource(seed)), seen: map[string]int{}}
	h.reopen()
	return h
}

// parseStored reads persisted rule text back as the daemon does
// (offload.RuleParser): nft specs as opaque rules, the rest as tc text.
func parseStored(text string) (*rule.Rule, error) {
	if strings.HasPrefix(text, nft.SpecPrefix) {
		return nft.ParseSpec(ingressDev, text)
	}
	return ruletext.Parse(ingressDev, text)
}

// reopen rebuilds the table from the maps alone, as a new process would.
func (h *harness) reopen() {
	t, err := maps.Open(&h.objs.XdpflowMaps, parseStored)
	if err != nil {
		h.t.Fatalf("open table: %v", err)
	}
	if h.deferred {
		t.DeferGrace()
	}
	h.table = t
}

// resolveRedirects gives r's redirects their devices' ifindexes.
func resolveRedirects(t testing.TB, r *rule.Rule) {
	t.Helper()
	for i := range r.Actions {
		if r.Actions[i].Kind == rule.ActRedirect {
			ifi, err := net.InterfaceByName(r.Actions[i].Dev)
			if err != nil {
				t.Fatal(err)
			}
			r.Actions[i].Ifindex = ifi.Index
		}
	}
}

func key(prio uint16, handle uint32) string { return fmt.Sprintf("%d/%d", prio, handle) }

// ruleKey tells the model's rules apart: tc's by pref and handle, nft's
// parts by level.
func ruleKey(r *rule.Rule) string {
	if r.Source == rule.SourceNFT {
		return fmt.Sprintf("nft %d", r.Level)
	}
	return key(r.Prio, r.Handle)
}

// install parses a tc command tail and installs it (replace when the
// handle exists), keeping the model in step. It returns false when the
// table refused it for an expected reason.
func (h *harness) install(prio uint16, handle uint32, text string) bool {
	h.t.Helper()
	args := append([]string{"add", "dev", ingressDev, "ingress", "pref", fmt.Sprint(prio), "handle", fmt.Sprint(handle)},
		strings.Fields(text)...)
	c, err := flower.ParseCommand(args)
	if err != nil {
		h.t.Fatalf("parse %q: %v", text, err)
	}
	r := c.Rule
	resolveRedirects(h.t, r)
	r.Text = ruletext.Format(r)
	k := key(prio, handle)
	old, replacing := h.ids[k]
	ids, err := h.table.Apply(maps.Change{Insert: []maps.Insert{{Rule: r, Replaces: old}}})
	if errors.Is(err, maps.ErrExists) || errors.Is(err, maps.ErrTableFull) {
		return false
	}
	if err != nil {
		h.t.Fatalf("install %q: %v", r.Text, err)
	}
	h.checkHeld()
	h.checkFlows()
	h.ids[k] = ids[0]
	if replacing {
		h.model.Replace(prio, handle, r)
	} else {
		h.model.Add(r)
	}
	return true
}

func (h *harness) remove(prio uint16, handle uint32) {
	k := key(prio, handle)
	id, ok := h.ids[k]
	if !ok {
		return
	}
	if _, err := h.table.Apply(maps.Change{Delete: []maps.RuleID{id}}); err != nil {
		h.t.Fatalf("delete %s: %v", k, err)
	}
	h.checkHeld()
	h.checkFlows()
	delete(h.ids, k)
	h.model.Delete(prio, handle)
}

// checkFlows fails the test if the table's flows disagree with the maps
// or among themselves (a change works them out as a delta of the last).
func (h *harness) checkFlows() {
	h.t.Helper()
	v, err := h.table.FlowViolations()
	if err != nil {
		h.t.Fatal(err)
	}
	if len(v) > 0 {
		h.t.Fatalf("flows out of step: %v", v[:min(len(v), 5)])
	}
}

// checkHeld fails the test if a slot was reused before its grace period.
func (h *harness) checkHeld() {
	h.t.Helper()
	if v := h.table.HeldViolations(); len(v) > 0 {
		h.t.Fatalf("slots reused too early: %v", v)
	}
}

// cacheHits is the program's flow cache hit count so far.
func (h *harness) cacheHits() int {
	h.t.Helper()
	cnt, err := h.table.Counters()
	if err != nil {
		h.t.Fatal(err)
	}
	return int(cnt[maps.CounterCacheHit])
}

// check runs frames through the program and the model and compares verdict,
// output frame and per-rule counters.
func (h *harness) check(frames [][]byte) {
	h.t.Helper()
	rules := h.model.Rules()
	before := map[maps.RuleID][2]uint64{}
	for _, in := range h.table.Rules() {
		p, b, _, err := h.table.Stats(in.ID)
		if err != nil {
			h.t.Fatal(err)
		}
		before[in.ID] = [2]uint64{p, b}
	}
	want := map[string][2]uint64{}
	for _, f := range frames {
		m := refmodel.Run(rules, f, 1)
		opts := ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+256)}
		ret, err := h.objs.Xdpflow.Run(&opts)
		if err != nil {
			h.t.Fatalf("run: %v", err)
		}
		h.seen[m.Verdict.String()]++
		if m.Rule >= 0 {
			h.seen["matched"]++
		}
		wantRet := map[refmodel.Verdict]uint32{refmodel.Pass: 2, refmodel.Drop: 1, refmodel.TX: 3, refmodel.Redirect: 4}[m.Verdict]
		matched := "none"
		if m.Rule >= 0 {
			matched = rules[m.Rule].Text
			r := rules[m.Rule]
			c := want[ruleKey(r)]
			want[ruleKey(r)] = [2]uint64{c[0] + 1, c[1] + uint64(m.Bytes)}
		}
		if ret != wantRet {
			k, _, ok := refmodel.Parse(f, 1)
			h.t.Fatalf("frame %s\nparsed=%v (punt: %q) key=%+v\nprogram returned %d, model %s (rule %q)\nrules:\n%s",
				hex.EncodeToString(f), ok, refmodel.Punt(f), k, ret, m.Verdict, matched, dump(rules))
		}
		if m.Verdict != refmodel.Drop && !bytes.Equal(opts.DataOut, m.Frame) {
			h.t.Fatalf("frame %s\nrule %q\nprogram out %s\nmodel out   %s", hex.EncodeToString(f), matched,
				hex.EncodeToString(opts.DataOut), hex.EncodeToString(m.Frame))
		}
	}
	for _, in := range h.table.Rules() {
		p, b, _, err := h.table.Stats(in.ID)
		if err != nil {
			h.t.Fatal(err)
		}
		got := [2]uint64{p - before[in.ID][0], b - before[in.ID][1]}
		if w := want[ruleKey(in.Rule)]; got != w {
			h.t.Fatalf("rule %q: counted %d packets %d bytes, model %d packets %d bytes\nrules:\n%s",
				in.Rule.Text, got[0], got[1], w[0], w[1], dump(rules))
		}
	}
}

func dump(rules []*rule.Rule) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString("  " + r.Text + "\n")
	}
	return b.String()
}

func TestDifferentialRandom(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	total := map[string]int{}
	defer func() {
		t.Logf("outcomes over all seeds: %v", total)
		// Both cache formats: the union of the rules' masks covers at
		// most 6 key words (two-way sets of short keys) or more.
		for _, format := range []string{"cache_hits_narrow_key", "cache_hits_whole_key"} {
			if total[format] < 500 {
				t.Errorf("only %d %s: that flow cache format is not exercised", total[format], format)
			}
		}
		for _, v := range []string{"pass", "drop", "tx", "redirect", "matched"} {
			if total[v] < 20 {
				t.Errorf("only %d %q outcomes: the generator no longer exercises them", total[v], v)
			}
		}
	}()
	for seed := int64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ns.Run(t, func() {
				h := newHarness(t, seed, 1<<16)
				// Even seeds: the daemon's deferred grace periods, with
				// reopens finding slots another table left held.
				h.deferred = seed%2 == 0
				h.reopen()
				g := &gen{rng: h.rng}
				for round := 0; round < 6; round++ {
					// Churn: add or replace a few rules, delete some.
					for i := 0; i < 4+h.rng.Intn(6); i++ {
						prio := uint16(1 + h.rng.Intn(6))
						handle := uint32(1 + h.rng.Intn(6))
						h.install(prio, handle, g.rule(prio, h.model.Rules()))
					}
					for i := 0; i < h.rng.Intn(3); i++ {
						h.remove(uint16(1+h.rng.Intn(6)), uint32(1+h.rng.Intn(6)))
					}
					if round%2 == 1 {
						h.reopen()
					}
					frames := make([][]byte, 300)
					for i := range frames {
						frames[i] = g.frame()
					}
					// Twice: the second pass is answered by the
					// flow cache and must not differ.
					hits := h.cacheHits()
					h.check(append(frames, frames...))
					words, err := h.table.CacheKeyWords()
					if err != nil {
						t.Fatal(err)
					}
					format := "cache_hits_narrow_key"
					if words == 0 {
						format = "cache_hits_whole_key"
					}
					h.seen[format] += h.cacheHits() - hits
				}
				for k, v := range h.seen {
					total[k] += v
				}
			})
		})
	}
}

// TestCacheKeyComparesEveryWord: packets whose keys differ in one word
// only, in each position a narrow cache key can give it and in the whole
// key, with rules that give neighbouring keys different fates. 8,192 keys
// share the cache's 2,048 sets, so each set sees several of them: a cache
// that failed to compare any one word would answer for another key.
func TestCacheKeyComparesEveryWord(t *testing.T) {
	ns := testutil.NewNetns(t)
	for _, c := range cacheKeyConfigs() {
		t.Run(c.name, func(t *testing.T) {
			ns.Run(t, func() {
				h := newHarness(t, 1, 1<<16)
				for i, r := range c.rules {
					if !h.install(uint16(1+i), 1, r) {
						t.Fatalf("install %q refused", r)
					}
				}
				words, err := h.table.CacheKeyWords()
				if err != nil {
					t.Fatal(err)
				}
				if words != c.words {
					t.Fatalf("cache key of %d words, want %d: the test no longer puts the word where it means to", words, c.words)
				}
				// Each frame twice in a row (the second is a hit), so
				// sets hold live entries when other keys come.
				var frames [][]byte
				for _, f := range c.frames {
					frames = append(frames, f, f)
				}
				hits := h.cacheHits()
				h.check(frames)
				// (Fewer than one per pair when the thread moves to
				// another CPU, whose cache is its own.)
				if got := h.cacheHits() - hits; got < len(c.frames)/2 {
					t.Fatalf("only %d cache hits of %d frames: the cache is not exercised", got, 2*len(c.frames))
				}
				if h.seen["drop"] == 0 || h.seen["pass"] == 0 {
					t.Fatalf("outcomes %v: both fates are needed", h.seen)
				}
			})
		})
	}
}

// cacheKeyConfig is rules, and frames whose keys differ in one word, that
// put that word in one place of the cache key.
type cacheKeyConfig struct {
	name   string
	rules  []string
	frames [][]byte
	words  int // the cache key's words, 0: the whole key
}

// cacheKeyConfigs are TestCacheKeyComparesEveryWord's rules and frames:
// the address in each slot of a narrow key and in the whole key, and the
// MAC in the first word.
func cacheKeyConfigs() []cacheKeyConfig {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	frame := func(dst net.HardwareAddr, dstIP net.IP) []byte {
		return testutil.Eth(dst, mac("02:00:00:00:00:01"), nil, 0x0800,
			testutil.IPv4(net.IPv4(198, 18, 0, 1), dstIP, 17, testutil.IPv4Opts{}, testutil.UDP(1024, 9, make([]byte, 18))))
	}
	// Varying the destination address: 198.18.0.0/21 and 198.18.16.0/21
	// are dropped, the rest of the /19 passed; a never-matching /32
	// makes the cache key hold the whole address. (Written as /24s: a
	// /21 would be merged, its subtable keeping /16 and the flow
	// checking the rest, and the cache key would hold every word a
	// merged flow's answer depends on.)
	byAddr := make([][]byte, 8192)
	for i := range byAddr {
		byAddr[i] = frame(mac("02:00:00:00:00:02"), net.IPv4(198, 18, byte(i>>8), byte(i)))
	}
	var addrRules []string
	for _, third := range []int{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23} {
		addrRules = append(addrRules, fmt.Sprintf("protocol ip flower dst_ip 198.18.%d.0/24 action drop", third))
	}
	addrRules = append(addrRules, "protocol ip flower dst_ip 10.1.1.1 action drop")
	// Never-matching rules (the frames are UDP from 198.18.0.1 to
	// 02:00:00:00:00:02) that put words below the address's into the
	// union, one at a time, so the address moves to the next slot.
	lower := []string{
		"protocol ip flower ip_proto tcp action drop",
		"protocol ip flower src_ip 10.2.2.2 action drop",
		"protocol ip flower src_mac 0e:0e:0e:0e:0e:0e action drop",
		"protocol ip flower dst_mac 0e:0e:0e:0e:0e:0e action drop",
		"protocol ip flower ip_proto udp dst_port 7 action drop",
	}
	configs := []cacheKeyConfig{}
	for n := 0; n <= len(lower); n++ {
		words := 2 + n
		if words > 6 {
			words = 0
		}
		configs = append(configs, cacheKeyConfig{fmt.Sprintf("address_after_%d_words", 1+n),
			append(append([]string{}, addrRules...), lower[:n]...), byAddr, words})
	}
	// Varying the destination MAC's bytes 2 and 3, the key's first word:
	// 02:00:00:00:00:00/20 is dropped.
	byMAC := make([][]byte, 8192)
	for i := range byMAC {
		byMAC[i] = frame(net.HardwareAddr{2, 0, byte(i >> 8), byte(i), 0, 2}, net.IPv4(198, 19, 0, 1))
	}
	configs = append(configs, cacheKeyConfig{"mac_first_word", []string{
		"protocol ip flower dst_mac 02:00:00:00:00:00/20 action drop",
		"protocol ip flower dst_mac 0e:0e:0e:0e:0e:0e action drop",
	}, byMAC, 3})

	return configs
}
