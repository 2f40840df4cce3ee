package maps_test

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/flower"
	"github.com/xdpflow/xdpflow/internal/refmodel"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// modelOp is one change the model took: a rule added or replaced at
// (prio, handle) (r non-nil), or deleted.
type modelOp struct {
	prio   uint16
	handle uint32
	r      *rule.Rule
	level  uint32 // an nft rule's: added, or deleted when r is nil
}

func buildModel(ops []modelOp) *refmodel.Table {
	m := &refmodel.Table{}
	for _, o := range ops {
		switch {
		case o.level != 0 && o.r == nil:
			m.DeleteLevel(o.level)
		case o.level != 0:
			m.Add(o.r)
		case o.r == nil:
			m.Delete(o.prio, o.handle)
		case !m.Replace(o.prio, o.handle, o.r):
			m.Add(o.r)
		}
	}
	return m
}

// parseTC parses a tc command tail as install does.
func parseTC(t testing.TB, prio uint16, handle uint32, text string) *rule.Rule {
	t.Helper()
	args := append([]string{"add", "dev", ingressDev, "ingress", "pref", fmt.Sprint(prio), "handle", fmt.Sprint(handle)},
		strings.Fields(text)...)
	var r *rule.Rule
	if c, err := flower.ParseCommand(args); err == nil {
		r = c.Rule
	} else {
		// A mask that is no prefix: as the kernel may hold one, untyped.
		r, err = ruletext.Parse(ingressDev, fmt.Sprintf("pref %d handle %d %s", prio, handle, text))
		if err != nil {
			t.Fatalf("parse %q: %v", text, err)
		}
	}
	resolveRedirects(t, r)
	r.Text = ruletext.Format(r)
	return r
}

// randomNFTRule is an nft drop or pass rule at level: IPv4, a source and a
// destination prefix around the generator's addresses whose mask keeps
// fewer bits than the prefix (the rest checked as a range), maybe UDP with
// a destination port range.
func randomNFTRule(rng interface{ Intn(int) int }, level uint32) *rule.Rule {
	var m rule.Match
	m.Key.EthType[0], m.Mask.EthType[0] = rule.HostToBE16(rule.EthPIP), 0xffff
	// A mask no tc filter of the generator has: no flow shared with one
	// (a reopen loses an opaque rule's claims other rules' flows shadow).
	m.Mask.IpTos = 0x0c
	addrs := []uint32{10<<24 | 1, 10<<24 | 2, 10<<24 | 1<<16 | 2<<8 | 3, 192<<24 | 2<<8 | 1}
	prefix := func(key, mask []byte) rule.Prefix4 {
		if rng.Intn(3) == 0 {
			return rule.Prefix4{}
		}
		bits := uint8(8 + rng.Intn(25))
		kept := min(bits, uint8(8*(1+rng.Intn(3))))
		return mergedPrefix(rule.Prefix4{Addr: addrs[rng.Intn(len(addrs))], Bits: bits}, kept, key, mask)
	}
	if rng.Intn(4) == 0 {
		// IPv6: prefixes of the generator's addresses in the mask, no
		// address ranges.
		m.Key.EthType[0] = rule.HostToBE16(0x86DD)
		v6 := []string{"2001:db8::1", "2001:db8::2", "2001:db8:1::1", "fe80::1"}
		for _, f := range []struct{ key, mask *[16]byte }{{&m.Key.SrcIp, &m.Mask.SrcIp}, {&m.Key.DstIp, &m.Mask.DstIp}} {
			if rng.Intn(3) == 0 {
				continue
			}
			copy(f.key[:], net.ParseIP(v6[rng.Intn(len(v6))]).To16())
			copy(f.mask[:], net.CIDRMask([]int{10, 32, 48, 64, 128}[rng.Intn(5)], 128))
		}
	} else {
		m.SrcAddrs = prefix(m.Key.SrcIp[:4], m.Mask.SrcIp[:4])
		m.DstAddrs = prefix(m.Key.DstIp[:4], m.Mask.DstIp[:4])
	}
	if rng.Intn(2) == 0 {
		m.Key.IpProto, m.Mask.IpProto = 17, 0xff
		if rng.Intn(2) == 0 {
			m.DstPortRange = []rule.PortRange{{Min: 50, Max: 100}, {Min: 1000, Max: 2000}, {Min: 0, Max: 80}}[rng.Intn(3)]
		}
	}
	m.Key = rule.MaskKey(&m.Key, &m.Mask)
	r := &rule.Rule{Source: rule.SourceNFT, Dev: ingressDev, Level: level, Protocol: rule.EthPAll,
		Match: m, Actions: []rule.Action{{Kind: []rule.ActionKind{rule.ActDrop, rule.ActPass}[level%2]}},
		Name: fmt.Sprintf("netdev/t/in/%d#0", level), Digest: fmt.Sprint(level)}
	r.Text = nft.FormatSpec(r)
	return r
}

var verdictRet = map[refmodel.Verdict]uint32{refmodel.Pass: 2, refmodel.Drop: 1, refmodel.TX: 3, refmodel.Redirect: 4}

// arbitraryMaskRules are filters on address masks that are no prefix.
var arbitraryMaskRules = []string{
	"protocol ip flower dst_ip 10.0.0.1/255.0.0.255 action drop",
	"protocol ip flower src_ip 0.0.0.2/0.0.0.3 action pass",
	"protocol ip flower dst_ip 0.0.2.0/0.0.255.0 ip_proto udp action drop",
	"protocol ip flower src_ip 10.0.0.0/255.0.0.0 dst_ip 0.1.0.0/0.255.0.0 action drop",
	"protocol ip flower dst_ip 192.0.2.1/255.255.0.255 action mirred egress redirect dev r1",
}

// TestEveryStepRandomChanges: random changes of one or more rules (tc
// filters of every kind the generator makes, filters on address masks that
// are no prefix, nft rules with IPv4 address ranges, port ranges, IPv6),
// some with a write step made to fail, some cut short by a crash (a new
// process opens the maps), reopens between. Before every write step of a
// one-rule change each packet's verdict is the old rules' or the new
// rules'; at every step the live list's spans hold every flow of the maps
// and every listed copy is its subtable's one flow in the maps; after each
// change FlowViolations is clean and verdicts and counters are the model's.
func TestEveryStepRandomChanges(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	steps := []string{"", "", "", "flows", "demote", "invalidate", "publish", "specs", "meta"}
	for seed := int64(1); seed <= 24; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			ns.Run(t, func() {
				h := newHarnessCache(t, seed, 1<<16, seed%2 == 0)
				h.deferred = seed%3 == 0
				h.reopen()
				g := &gen{rng: h.rng}
				var ops []modelOp
				frames := make([][]byte, 120)
				for i := range frames {
					frames[i] = g.frame()
				}
				var (
					oldV, newV []uint32
					what       string
				)
				var fail, crashAt string
				stepChecks := true
				maps.StepHook(t, func() *maps.Table { return h.table }, func(step string) error {
					for i, f := range frames {
						if !stepChecks {
							break
						}
						ret, err := h.objs.Xdpflow.Run(&ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+256)})
						if err != nil {
							t.Fatal(err)
						}
						if ret != oldV[i] && ret != newV[i] {
							k, _, _ := refmodel.Parse(f, 1)
							t.Fatalf("%s, before step %q: frame %d (key %+v) verdict %d, old rules %d, new %d",
								what, step, i, k, ret, oldV[i], newV[i])
						}
					}
					if v, err := h.table.SpanViolations(); err != nil || len(v) > 0 {
						t.Fatalf("%s, before step %q: %v %v", what, step, v[:min(len(v), 4)], err)
					}
					if v, err := h.table.CopyViolations(step == "flows"); err != nil || len(v) > 0 {
						t.Fatalf("%s, before step %q: %v %v", what, step, v[:min(len(v), 4)], err)
					}
					if step == crashAt {
						panic(processDied{})
					}
					if step == fail {
						return errors.New("injected")
					}
					return nil
				})
				for change := 0; change < 50; change++ {
					var batch []modelOp
					var ch maps.Change
					var keys []string
					taken := map[string]bool{}
					what = ""
					n := 1
					if h.rng.Intn(4) == 0 {
						n = 2 + h.rng.Intn(3)
					}
					var inserts []modelOp
					nftEntries := map[rule.Entry]bool{}
					for _, r := range buildModel(ops).Rules() {
						if r.Source == rule.SourceNFT {
							nftEntries[r.Match.Entry()] = true
						}
					}
					for len(batch)+len(inserts) < n {
						prio := uint16(1 + h.rng.Intn(6))
						handle := uint32(1 + h.rng.Intn(5))
						k := key(prio, handle)
						var op modelOp
						if h.rng.Intn(4) == 0 {
							level := uint32(1 + h.rng.Intn(12))
							k = fmt.Sprint("nft ", level)
							if taken[k] {
								continue
							}
							if id, ok := h.ids[k]; ok {
								op = modelOp{level: level}
								ch.Delete = append(ch.Delete, id)
							} else {
								r := randomNFTRule(h.rng, level)
								e := r.Match.Entry()
								if nftEntries[e] {
									continue // two nft rules of one flow: see above
								}
								nftEntries[e] = true
								op = modelOp{level: level, r: r}
							}
						} else if taken[k] {
							continue
						} else if _, ok := h.ids[k]; ok && h.rng.Intn(4) == 0 {
							op = modelOp{prio: prio, handle: handle}
							ch.Delete = append(ch.Delete, h.ids[k])
						} else {
							text := g.rule(prio, nil)
							if (prio == 1 || prio == 4) && h.rng.Intn(3) == 0 {
								text = g.pick(arbitraryMaskRules)
							}
							op = modelOp{prio: prio, handle: handle, r: parseTC(t, prio, handle, text)}
						}
						taken[k] = true
						if op.r == nil {
							batch = append(batch, op)
							what += "; delete " + k
						} else {
							inserts = append(inserts, op)
							ch.Insert = append(ch.Insert, maps.Insert{Rule: op.r, Replaces: h.ids[k]})
							what += "; install " + k + " " + op.r.Text
						}
						keys = append(keys, k)
					}
					// The model: deletes, then inserts in the change's order
					// (as the table places them).
					// Replaces first: a new filter of a replaced one's mask
					// then joins its group, as in the model.
					slices.SortStableFunc(inserts, func(a, b modelOp) int {
						ra, rb := h.ids[key(a.prio, a.handle)] != 0 && a.level == 0, h.ids[key(b.prio, b.handle)] != 0 && b.level == 0
						switch {
						case ra && !rb:
							return -1
						case rb && !ra:
							return 1
						}
						return 0
					})
					ch.Insert = ch.Insert[:0]
					for _, op := range inserts {
						rep := maps.RuleID(0)
						if op.level == 0 {
							rep = h.ids[key(op.prio, op.handle)]
						}
						ch.Insert = append(ch.Insert, maps.Insert{Rule: op.r, Replaces: rep})
					}
					batch = append(batch, inserts...)
					oldRules := buildModel(ops).Rules()
					newRules := buildModel(append(append([]modelOp(nil), ops...), batch...)).Rules()
					oldV, newV = make([]uint32, len(frames)), make([]uint32, len(frames))
					for i, f := range frames {
						oldV[i] = verdictRet[refmodel.Run(oldRules, f, 1).Verdict]
						newV[i] = verdictRet[refmodel.Run(newRules, f, 1).Verdict]
					}
					// Several rules at once are not atomic for one packet
					// (a flow demoted before another's goes): the packets
					// are checked only after them.
					stepChecks = n == 1
					fail = steps[h.rng.Intn(len(steps))]
					if h.rng.Intn(8) == 0 {
						crashAt, fail = fail, ""
					}
					failed := fail
					var (
						ids     []maps.RuleID
						err     error
						crashed bool
					)
					func() {
						defer func() {
							if r := recover(); r != nil {
								if _, ok := r.(processDied); !ok {
									panic(r)
								}
								crashed = true
							}
						}()
						ids, err = h.table.Apply(ch)
					}()
					fail = ""
					t.Logf("change %d: %s, failing step %q, crash %q (%v): %v", change, what, failed, crashAt, crashed, err)
					crashAt = ""
					if crashed {
						// A new process repairs what the dead one left.
						stepChecks = false
						h.reopen()
						// A replace cut short leaves both rules' specs, of
						// one rank (the next sync drops one).
						v, err := h.table.FlowViolations()
						if err != nil {
							t.Fatal(err)
						}
						v = slices.DeleteFunc(v, func(s string) bool { return strings.HasSuffix(s, "of a flow not in rank order") })
						if len(v) > 0 {
							t.Fatalf("%s, reopened after a crash: %v", what, v[:min(len(v), 4)])
						}
						if v, err := h.table.SpanViolations(); err != nil || len(v) > 0 {
							t.Fatalf("%s, reopened after a crash: %v %v", what, v[:min(len(v), 4)], err)
						}
						resyncModel(t, h, ops)
						oldV = nil
						for _, f := range frames {
							oldV = append(oldV, verdictRet[refmodel.Run(oldRules, f, 1).Verdict])
						}
						newV = oldV
						h.checkFlows()
						h.check(frames)
						continue
					}
					applied := err == nil
					switch {
					case err == nil:
					case errors.Is(err, maps.ErrExists), errors.Is(err, maps.ErrTableFull):
					case strings.Contains(err.Error(), "injected"):
					default:
						t.Fatalf("%s: %v", what, err)
					}
					what += " (done)"
					if applied {
						ops = append(ops, batch...)
						// ids: the deletes' keys go, the inserts' take
						// the change's ids in order.
						j := 0
						for _, op := range batch {
							k := key(op.prio, op.handle)
							if op.level != 0 {
								k = fmt.Sprint("nft ", op.level)
							}
							if op.r == nil {
								delete(h.ids, k)
							} else {
								h.ids[k] = ids[j]
								j++
							}
						}
						oldV = newV
					} else {
						newV = oldV
					}
					h.checkFlows()
					if v, err := h.table.SpanViolations(); err != nil || len(v) > 0 {
						t.Fatalf("%s: %v %v", what, v[:min(len(v), 4)], err)
					}
					h.model = *buildModel(ops)
					if n, l, err := h.table.InlinedSubtables(); err == nil {
						t.Logf("inlined %d of %d", n, l)
					}
					explainFrames(t, h, frames)
					h.check(frames)
					if h.rng.Intn(5) == 0 {
						h.reopen()
						h.checkFlows()
						h.check(frames)
					}
				}
			})
		})
	}
}

// explainFrames runs each frame alone and, where the verdict is not the
// model's, logs which rule counted it and the rules' matches.
func explainFrames(t *testing.T, h *harness, frames [][]byte) {
	t.Helper()
	rules := h.model.Rules()
	for _, f := range frames {
		m := refmodel.Run(rules, f, 1)
		before := map[maps.RuleID]uint64{}
		for _, in := range h.table.Rules() {
			p, _, _, _ := h.table.Stats(in.ID)
			before[in.ID] = p
		}
		ret, err := h.objs.Xdpflow.Run(&ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+256)})
		if err != nil {
			t.Fatal(err)
		}
		if ret == verdictRet[m.Verdict] {
			continue
		}
		for _, in := range h.table.Rules() {
			p, _, _, _ := h.table.Stats(in.ID)
			if p != before[in.ID] {
				t.Logf("the program's rule: %d %q seq %d group %d match %+v", in.ID, in.Rule.Text, in.Seq, in.GroupSeq, in.Rule.Match)
			}
		}
		if m.Rule >= 0 {
			t.Logf("the model's rule: %q match %+v", rules[m.Rule].Text, rules[m.Rule].Match)
		}
		for _, in := range h.table.Rules() {
			if in.Rule.Source == rule.SourceNFT {
				t.Logf("nft rule %d %q level %d match %+v", in.ID, in.Rule.Text, in.Rule.Level, in.Rule.Match)
			}
		}
		sp, _ := h.table.ListedSpans()
		t.Logf("subtables %+v spans %+v", h.table.SubtableBounds(), sp)
		return
	}
}

// processDied, panicked at a write step, is the writing process dying there.
type processDied struct{}

// resyncModel makes the table's rules the model's of ops again, after a
// crash left it holding what the specs said: every rule out, then the
// model's in its order.
func resyncModel(t *testing.T, h *harness, ops []modelOp) {
	t.Helper()
	var del []maps.RuleID
	for _, in := range h.table.Rules() {
		del = append(del, in.ID)
	}
	if _, err := h.table.Apply(maps.Change{Delete: del}); err != nil {
		t.Fatalf("resync: %v", err)
	}
	keyOf := map[*rule.Rule]string{}
	for _, op := range ops {
		if op.r == nil {
			continue
		}
		if op.level != 0 {
			keyOf[op.r] = fmt.Sprint("nft ", op.level)
		} else {
			keyOf[op.r] = key(op.prio, op.handle)
		}
	}
	h.ids = map[string]maps.RuleID{}
	m := buildModel(ops)
	rules := m.Rules()
	var ch maps.Change
	for _, r := range rules {
		ch.Insert = append(ch.Insert, maps.Insert{Rule: r})
	}
	ids, err := h.table.Apply(ch)
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	for i, r := range rules {
		h.ids[keyOf[r]] = ids[i]
	}
	h.model = *m
}
