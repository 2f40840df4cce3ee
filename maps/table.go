// Package maps is the Go side of one device's flow tables: subtables,
// flows, action sets, per-rule counters and the persisted rule specs.
// Nothing else reads or writes these map layouts.
//
// Every change is a transaction whose writes are ordered so that each packet
// sees either the old or the new rule set:
//
//  1. new action sets, counters and rule specs are written (unreferenced);
//  2. new subtables are published, still empty (list swap);
//  3. flows are put: new keys appear, changed keys are replaced in place;
//  4. stale flows are deleted;
//  5. the cache generation is bumped: the change is live;
//  6. emptied subtables are unpublished (list swap);
//  7. after an RCU grace period, freed slots become reusable (grace.go).
//
// A list swap writes the next buffer of a ring of eight and points
// meta.active_list at it; a buffer is written again only after a grace
// period since it stopped being live.
package maps

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"unsafe"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/rule"
)

// RuleID names an installed rule: its rule_stats slot.
type RuleID = uint32

type (
	flowKey    = bpf.XdpflowXfFlowKey
	flowValue  = bpf.XdpflowXfFlow
	actionSet  = bpf.XdpflowXfActionSet
	ruleSpec   = bpf.XdpflowXfRuleSpec
	ruleStats  = bpf.XdpflowXfRuleStats
	metaRecord = bpf.XdpflowXfMeta
)

// MaxSubtables is the program's compile-time bound.
const MaxSubtables = len(bpf.XdpflowXfSubtableList{}.Subtables)

// ErrTableFull is returned when a change needs more room than the maps have.
var ErrTableFull = errors.New("flow table full")

// ErrExists is returned for a rule whose match another rule already holds.
var ErrExists = errors.New("a filter with the same match exists")

// Installed is a rule as the table holds it.
type Installed struct {
	ID        RuleID
	Rule      *rule.Rule
	Seq       uint64 // insertion order within its mask group
	GroupSeq  uint64 // creation order of its mask group within its priority
	ActionSet uint32
	Entries   int // flow entries it owns
	flows     []flowKey
}

type subtableKey struct {
	prio  uint32 // rule.Rule.Order
	group uint64
	mask  rule.Key
}

type subtable struct {
	subtableKey
	id    uint32
	flows int
}

type actionSlot struct {
	slot uint32
	refs int
}

type groupKey struct {
	prio  uint32 // rule.Rule.Order
	group uint64
}

// ParseFunc turns persisted rule text back into a rule.
type ParseFunc func(text string) (*rule.Rule, error)

// Table is one device's flow tables, opened from their maps.
type Table struct {
	m    *bpf.XdpflowMaps
	meta metaRecord
	// unsettled: a live change's cleanup failed, and so did its repair
	// (ErrUnsettled); the next write repairs first.
	unsettled bool
	// listGen is the live subtable list's generation.
	listGen uint32

	maxFlows, maxRules, maxActionSets int

	rules      map[RuleID]*Installed
	groups     map[groupKey][]*Installed // sorted by Seq
	subtables  map[subtableKey]*subtable
	stByID     map[uint32]*subtable
	flows      map[flowKey]RuleID
	actionSets map[string]*actionSlot // by content
	asContent  map[uint32]string      // slot -> content key
	asBySlot   map[uint32]actionSet   // slot -> content
	txPorts    map[uint32]bool        // redirect ifindexes put in the devmap (the kernel drops a gone device's)
	txRefs     map[uint32]int         // redirect ifindex -> rules using it
	// byText finds a rule by source and text (UpdateSource); built on
	// first use, kept by write, dropped (nil) by anything else that
	// changes rules.
	byText map[textKey]RuleID
	// idHint: no rule id below it is free or held (allocation starts
	// there rather than scanning 10,000 taken ids for each new rule).
	idHint RuleID

	held        []*heldSlots // freed, waiting for a grace period (grace.go)
	deferGrace  bool
	foreignHeld bool // another process left slots held: wait before writing
}

const (
	dirtyWriting = bpf.XdpflowXfDirtyXF_DIRTY_WRITING
	dirtyGrace   = bpf.XdpflowXfDirtyXF_DIRTY_GRACE
)

// Init writes the initial state of freshly created maps.
func Init(m *bpf.XdpflowMaps, maxSubtables int, ifindex, attachFlags uint32) error {
	if maxSubtables < 1 || maxSubtables > MaxSubtables {
		return fmt.Errorf("subtables %d: must be 1..%d", maxSubtables, MaxSubtables)
	}
	meta := metaRecord{Magic: metaMagic, MaxSubtables: uint32(maxSubtables), NextSeq: 1,
		Ifindex: ifindex, AttachFlags: attachFlags}
	if err := m.Meta.Put(uint32(0), &meta); err != nil {
		return fmt.Errorf("init meta: %w", err)
	}
	// Generation 1: the zeroed cache slots (generation 0) never match.
	if err := m.CacheGen.Put(uint32(0), uint32(1)); err != nil {
		return fmt.Errorf("init cache generation: %w", err)
	}
	return nil
}

// Open reads the table state from its maps. parse turns persisted rule
// text back into rules; dev names the device for those rules.
func Open(m *bpf.XdpflowMaps, parse ParseFunc) (*Table, error) {
	t := &Table{
		m:             m,
		maxFlows:      int(m.Flows.MaxEntries()),
		maxRules:      int(m.RuleStats.MaxEntries()),
		maxActionSets: int(m.ActionSets.MaxEntries()),
		rules:         map[RuleID]*Installed{},
		groups:        map[groupKey][]*Installed{},
		subtables:     map[subtableKey]*subtable{},
		stByID:        map[uint32]*subtable{},
		flows:         map[flowKey]RuleID{},
		actionSets:    map[string]*actionSlot{},
		asContent:     map[uint32]string{},
		asBySlot:      map[uint32]actionSet{},
		txPorts:       map[uint32]bool{},
		idHint:        1,
	}
	if err := m.Meta.Lookup(uint32(0), &t.meta); err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	if t.meta.Magic != metaMagic {
		return nil, fmt.Errorf("pinned state has layout %#x, this xdpflow wants %#x: disable and enable the device again",
			t.meta.Magic, metaMagic)
	}
	// Slots held by another process (or by one that died mid-change) are
	// unknown here: the first write waits a grace period for them.
	t.foreignHeld = t.meta.Dirty != 0
	if err := t.load(parse); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Table) load(parse ParseFunc) error {
	// Subtables: the live list.
	var list bpf.XdpflowXfSubtableList
	if err := t.m.SubtableLists.Lookup(t.meta.ActiveList%listBuffers, &list); err != nil {
		return fmt.Errorf("read subtable list: %w", err)
	}
	t.listGen = list.Generation
	for i := 0; i < int(list.Count) && i < MaxSubtables; i++ {
		s := list.Subtables[i]
		st := &subtable{subtableKey: subtableKey{s.Prio, s.GroupSeq, s.Mask}, id: s.Id}
		t.subtables[st.subtableKey] = st
		t.stByID[st.id] = st
	}

	// Rules: the persisted specs.
	var (
		id   uint32
		spec ruleSpec
	)
	var bad []uint32
	it := t.m.RuleSpecs.Iterate()
	for it.Next(&id, &spec) {
		text := string(spec.Text[:min(int(spec.TextLen), len(spec.Text))])
		r, err := parse(text)
		if err != nil {
			bad = append(bad, id)
			continue
		}
		r.Source, r.Text = rule.Source(spec.Source), text
		in := &Installed{ID: id, Rule: r, Seq: spec.Seq, GroupSeq: spec.GroupSeq, ActionSet: spec.ActionSet}
		t.rules[id] = in
		gk := groupKey{r.Order(), in.GroupSeq}
		t.groups[gk] = append(t.groups[gk], in)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read rule specs: %w", err)
	}
	for gk := range t.groups {
		sortBySeq(t.groups[gk])
	}

	// Action sets: their content as installed. Redirect targets come from
	// there, not from names, which may have moved since.
	for _, in := range t.rules {
		set, ok := t.asBySlot[in.ActionSet]
		if !ok {
			if err := t.m.ActionSets.Lookup(in.ActionSet, &set); err != nil {
				return fmt.Errorf("read action set %d: %w", in.ActionSet, err)
			}
			c := contentKey(&set)
			t.actionSets[c] = &actionSlot{slot: in.ActionSet}
			t.asContent[in.ActionSet] = c
			t.asBySlot[in.ActionSet] = set
		}
		t.actionSets[t.asContent[in.ActionSet]].refs++
		for i := range in.Rule.Actions {
			if i < int(set.Count) && in.Rule.Actions[i].Kind == rule.ActRedirect {
				in.Rule.Actions[i].Ifindex = int(set.Actions[i].Ifindex)
				if set.Actions[i].Op == uint8(bpf.XdpflowXfActionOpXF_ACT_TX) {
					in.Rule.Actions[i].Ifindex = int(t.meta.Ifindex)
				}
			}
		}
	}
	t.countTxPorts()

	// Opaque rules (nft) are known by their installed entries only: read
	// them from the flows map. After a writer died mid-change those cannot
	// be trusted, so the rules are dropped; the daemon installs them again
	// from the kernel's ruleset, and until then nft handles their packets.
	if err := t.loadOpaqueFlows(); err != nil {
		return err
	}
	if t.meta.Dirty&dirtyWriting != 0 {
		for id, in := range t.rules {
			if in.Rule.Opaque {
				bad = append(bad, id)
				t.dropLoaded(in)
			}
		}
		t.countTxPorts()
	}

	// Flows: recomputed from the rules, the same way they were installed.
	if t.rebuildFlows() || len(bad) > 0 || t.meta.Dirty&dirtyWriting != 0 {
		// A writer died mid-change, or specs are unreadable: make the
		// maps match the rules again.
		return t.repair(bad)
	}
	return nil
}

// loadOpaqueFlows gives each opaque rule the flows the map holds for it.
func (t *Table) loadOpaqueFlows() error {
	opaque := false
	for _, in := range t.rules {
		opaque = opaque || in.Rule.Opaque
	}
	if !opaque {
		return nil
	}
	return t.readFlows(func(fk flowKey, val flowValue, _ *narrowKey, known bool) {
		if in := t.rules[val.Stats]; known && in != nil && in.Rule.Opaque {
			in.flows = append(in.flows, fk)
		}
	})
}

// dropLoaded forgets a rule read from the specs (before flows are built).
func (t *Table) dropLoaded(in *Installed) {
	delete(t.rules, in.ID)
	t.byText, t.idHint = nil, 1
	gk := groupKey{in.Rule.Order(), in.GroupSeq}
	members := t.groups[gk][:0]
	for _, x := range t.groups[gk] {
		if x != in {
			members = append(members, x)
		}
	}
	if len(members) == 0 {
		delete(t.groups, gk)
	} else {
		t.groups[gk] = members
	}
	if c, ok := t.asContent[in.ActionSet]; ok {
		if a := t.actionSets[c]; a != nil {
			if a.refs--; a.refs <= 0 {
				delete(t.actionSets, c)
				delete(t.asContent, in.ActionSet)
				delete(t.asBySlot, in.ActionSet)
			}
		}
	}
}

// rebuildFlows recomputes every flow from the rules, reusing the live
// subtables. It reports whether the live list differs from what the rules
// need.
func (t *Table) rebuildFlows() (differs bool) {
	live := t.subtables
	t.subtables, t.flows = map[subtableKey]*subtable{}, map[flowKey]RuleID{}
	used := map[uint32]bool{}
	for _, st := range live {
		used[st.id] = true
	}
	next := uint32(1)
	liveByID := t.stByID
	t.stByID = map[uint32]*subtable{}
	for gk, members := range t.groups {
		entries := expandGroup(members)
		for _, in := range members {
			if in.Rule.Opaque {
				// Entries as installed: (subtable mask, masked key).
				for _, fk := range in.flows {
					if st := liveByID[fk.Subtable]; st != nil {
						entries[in.ID] = append(entries[in.ID], rule.Entry{Key: fk.Key, Mask: st.mask})
					}
				}
			}
			in.flows = in.flows[:0]
			for _, e := range entries[in.ID] {
				k := subtableKey{gk.prio, gk.group, e.Mask}
				st := t.subtables[k]
				if st == nil {
					if st = live[k]; st == nil {
						// Not in the live list: a fresh id, never one
						// whose stale flows could show up under it.
						for used[next] {
							next++
						}
						st = &subtable{subtableKey: k, id: next}
						used[next] = true
						differs = true
					}
					st.flows = 0
					t.subtables[k] = st
					t.stByID[st.id] = st
				}
				fk := flowKey{Subtable: st.id, Key: e.Key}
				t.flows[fk] = in.ID
				in.flows = append(in.flows, fk)
				st.flows++
			}
			in.Entries = len(in.flows)
		}
	}
	return differs || len(t.subtables) != len(live)
}

func sortBySeq(s []*Installed) { slices.SortFunc(s, bySeq) }

func bySeq(a, b *Installed) int { return cmp.Compare(a.Seq, b.Seq) }

// textKey names a rule by what SyncSource and UpdateSource know it by.
type textKey struct {
	src  rule.Source
	text string
}

// expandGroup expands the rules of one mask group, in insertion order.
func expandGroup(members []*Installed) map[RuleID][]rule.Entry {
	out := make(map[RuleID][]rule.Entry, len(members))
	ranged := false
	for _, in := range members {
		ranged = ranged || in.Rule.RangesOrdered()
	}
	var earlier []*rule.Rule
	for _, in := range members {
		if in.Rule.Opaque {
			continue // entries as installed; never ranged-ordered
		}
		if ranged {
			out[in.ID] = rule.Expand(in.Rule, earlier)
			earlier = append(earlier, in.Rule)
		} else {
			out[in.ID] = rule.Expand(in.Rule, nil)
		}
	}
	return out
}

func contentKey(set *actionSet) string {
	// The datapath bytes themselves (padding included, which encoding
	// leaves zero): equal content, equal key. Called once per rule of a
	// change, so it must be cheap.
	n := min(int(set.Count), len(set.Actions))
	used := *set
	clear(used.Actions[n:])
	return string((*[unsafe.Sizeof(actionSet{})]byte)(unsafe.Pointer(&used))[:])
}

// Rules returns the installed rules in lookup order: priority, mask group,
// insertion.
func (t *Table) Rules() []*Installed {
	out := make([]*Installed, 0, len(t.rules))
	for _, in := range t.rules {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Rule.Order() != b.Rule.Order() {
			return a.Rule.Order() < b.Rule.Order()
		}
		if a.GroupSeq != b.GroupSeq {
			return a.GroupSeq < b.GroupSeq
		}
		return a.Seq < b.Seq
	})
	return out
}

// Rule returns an installed rule by id.
func (t *Table) Rule(id RuleID) *Installed { return t.rules[id] }

// Sizes reports what the table holds and can hold.
type Sizes struct {
	Rules, MaxRules         int
	Flows, MaxFlows         int
	Subtables, MaxSubtables int
	ActionSets              int
	// CacheKeyWords is how many of the key's words the flow cache keys
	// packets by (those the union of the masks covers): 1..6, two entries
	// per set; 0: the whole key, one per set.
	CacheKeyWords int
	// CacheEntries is the flow cache's size per CPU as enable was given
	// it: in entries of a narrow key (a whole-key entry takes two).
	CacheEntries int
}

// Sizes reports the table's occupancy.
func (t *Table) Sizes() Sizes {
	var union rule.Key
	for _, st := range t.subtables {
		union = rule.UnionKey(&union, &st.mask)
	}
	sz := Sizes{
		Rules: len(t.rules), MaxRules: t.maxRules,
		Flows: len(t.flows), MaxFlows: t.maxFlows,
		Subtables: len(t.subtables), MaxSubtables: int(t.meta.MaxSubtables),
		ActionSets:    len(t.actionSets),
		CacheKeyWords: int(layoutOf(&union).n),
		CacheEntries:  t.cacheEntriesPerCPU(),
	}
	return sz
}

// Stats sums a rule's per-CPU counters. LastUsedNs is the latest CPU's.
func (t *Table) Stats(id RuleID) (packets, bytes, lastUsedNs uint64, err error) {
	var per []ruleStats
	if err := t.m.RuleStats.Lookup(id, &per); err != nil {
		return 0, 0, 0, fmt.Errorf("read stats of rule %d: %w", id, err)
	}
	for _, s := range per {
		packets += s.Packets
		bytes += s.Bytes
		lastUsedNs = max(lastUsedNs, s.LastUsedNs)
	}
	return packets, bytes, lastUsedNs, nil
}

// Counters sums the program's per-CPU counters.
func (t *Table) Counters() ([bpf.XdpflowXfCounterXF_CNT_MAX]uint64, error) {
	var out [bpf.XdpflowXfCounterXF_CNT_MAX]uint64
	var per []bpf.XdpflowXfCounters
	if err := t.m.Counters.Lookup(uint32(0), &per); err != nil {
		return out, fmt.Errorf("read counters: %w", err)
	}
	for _, c := range per {
		for i, v := range c.N {
			out[i] += v
		}
	}
	// The program counts how each packet ended, not that it came or hit.
	hit := out[bpf.XdpflowXfCounterXF_CNT_DROP] + out[bpf.XdpflowXfCounterXF_CNT_PASS] +
		out[bpf.XdpflowXfCounterXF_CNT_TX] + out[bpf.XdpflowXfCounterXF_CNT_REDIRECT] +
		out[bpf.XdpflowXfCounterXF_CNT_ACTION_ERROR] + out[bpf.XdpflowXfCounterXF_CNT_KEEPALIVE]
	out[bpf.XdpflowXfCounterXF_CNT_HIT] = hit
	out[bpf.XdpflowXfCounterXF_CNT_RX] = hit + out[bpf.XdpflowXfCounterXF_CNT_MISS] + out[bpf.XdpflowXfCounterXF_CNT_UNPARSED]
	return out, nil
}

// SubtableOrder returns the live list's (prio, flows) in lookup order.
func (t *Table) SubtableOrder() []struct {
	ID    uint32
	Prio  uint32
	Flows int
} {
	sts := t.sortedSubtables(nil, nil)
	out := make([]struct {
		ID    uint32
		Prio  uint32
		Flows int
	}, len(sts))
	for i, s := range sts {
		out[i].ID, out[i].Prio, out[i].Flows = s.id, s.prio, s.flows
	}
	return out
}

// sortedSubtables returns the subtables in lookup order, leaving out drop
// and adding add.
func (t *Table) sortedSubtables(drop map[uint32]bool, add []*subtable) []*subtable {
	out := make([]*subtable, 0, len(t.subtables)+len(add))
	for _, s := range t.subtables {
		if !drop[s.id] {
			out = append(out, s)
		}
	}
	out = append(out, add...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.prio != b.prio {
			return a.prio < b.prio
		}
		if a.group != b.group {
			return a.group < b.group
		}
		return bytes.Compare(rule.KeyBytes(&a.mask), rule.KeyBytes(&b.mask)) < 0
	})
	return out
}

// listBuffers is the size of the ring of subtable list buffers.
const listBuffers = uint32(bpf.XdpflowXfLimitsXF_LIST_BUFFERS)

// publish makes list the program's subtable list: it fills the next buffer
// of the ring and points meta.active_list at it. Runs that read the old
// list finish with it; that buffer is held until they have.
func (t *Table) publish(list []*subtable) error {
	var l bpf.XdpflowXfSubtableList
	if len(list) > MaxSubtables {
		return fmt.Errorf("%d subtables: %w", len(list), ErrTableFull)
	}
	l.Count = uint32(len(list))
	for i, s := range list {
		lay := layoutOf(&s.mask)
		l.Subtables[i] = bpf.XdpflowXfSubtable{Id: s.id, Prio: s.prio, GroupSeq: s.group, Mask: s.mask,
			NarrowWords: lay.n, WordIdx: lay.idx}
		l.UnionMask = rule.UnionKey(&l.UnionMask, &s.mask)
	}
	// The flow cache's key: the union's words, when few enough (a
	// narrow layout, as a subtable's), else the whole masked key.
	if lay := layoutOf(&l.UnionMask); lay.n > 0 {
		uw := rule.KeyWords(&l.UnionMask)
		l.CacheWords, l.CacheWordIdx = lay.n, lay.idx
		for j := 0; j < int(lay.n); j++ {
			l.CacheMask[j] = uw[lay.idx[j]]
		}
	}
	// Unique per published list (cache entries are tagged with it), and
	// kept across processes: the next is one past the live one's.
	l.Generation = t.listGen + 1
	if l.Generation == 0 {
		l.Generation = 1
	}
	live := t.meta.ActiveList % listBuffers
	next := (live + 1) % listBuffers
	// The next buffer may still be read by runs from before it stopped
	// being live (only when changes come faster than grace periods).
	if err := t.waitFor(func(h *heldSlots) bool { return h.listBuf == int(next)+1 }); err != nil {
		return err
	}
	if err := t.m.SubtableLists.Put(next, &l); err != nil {
		return fmt.Errorf("write subtable list: %w", err)
	}
	t.meta.ActiveList = next
	if err := t.putMeta(); err != nil {
		return fmt.Errorf("swap subtable list: %w", err)
	}
	t.listGen = l.Generation
	t.hold(&heldSlots{listBuf: int(live) + 1})
	return nil
}

// invalidateCache makes every flow cache entry stale for runs that
// start after it; a run that read the old generation may use an old entry
// until it ends (its slots are held until then).
func (t *Table) invalidateCache() error {
	var gen uint32
	if err := t.m.CacheGen.Lookup(uint32(0), &gen); err != nil {
		return fmt.Errorf("read cache generation: %w", err)
	}
	gen++
	if gen == 0 {
		gen = 1 // 0 is the zeroed slots' generation
	}
	if err := t.m.CacheGen.Put(uint32(0), gen); err != nil {
		return fmt.Errorf("invalidate flow cache: %w", err)
	}
	return nil
}

func (t *Table) putMeta() error {
	if err := t.m.Meta.Put(uint32(0), &t.meta); err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	return nil
}

const metaMagic = uint32(bpf.XdpflowXfLimitsXF_META_MAGIC)

// Room returns what is left for rules of source src if every rule of that
// source were removed: the budget a source recompiling all of its rules
// may use. Rule slot 0 is never used.
func (t *Table) Room(src rule.Source) (subtables, flows, rules int) {
	used := map[uint32]bool{}
	nflows, nrules := 0, 0
	for _, in := range t.rules {
		if in.Rule.Source == src {
			continue
		}
		nrules++
		nflows += len(in.flows)
		for _, fk := range in.flows {
			used[fk.Subtable] = true
		}
	}
	return int(t.meta.MaxSubtables) - len(used), t.maxFlows - nflows, t.maxRules - 1 - nrules
}

// Generation is the flow cache generation, which every change by
// any process bumps: a holder of an open Table compares it to the value
// after its own last change to know whether someone else changed the
// table since (and it must be reopened).
func (t *Table) Generation() (uint32, error) {
	var gen uint32
	if err := t.m.CacheGen.Lookup(uint32(0), &gen); err != nil {
		return 0, fmt.Errorf("read cache generation: %w", err)
	}
	return gen, nil
}
