// Package maps is the Go side of one device's flow tables: subtables,
// flows, action sets, per-rule counters and the persisted rule specs.
// Nothing else reads or writes these map layouts.
//
// Every change is a transaction (Apply), worked out in memory first
// (plan.go) and then written in an order that lets each packet see either
// the old or the new rule set (write.go):
//
//  1. new action sets, counters and rule specs are written (unreferenced);
//  2. new subtables are published, still empty (list swap);
//  3. flows are put: new keys appear, and keys that pass to an owner of
//     a lower (earlier) rank are replaced in place;
//  4. keys that pass to an owner of a higher rank, and ranged keys that
//     pass to another owner (with its own ranges), are replaced, a key
//     after those its old owner takes, and stale flows are deleted: a
//     packet's new rule is in before its old one goes;
//  5. the cache generation is bumped: the change is live;
//  6. emptied subtables are unpublished (list swap);
//  7. after an RCU grace period, freed slots become reusable (grace.go).
//
// A list swap writes the next buffer of a ring of eight and points
// meta.active_list at it; a buffer is written again only after a grace
// period since it stopped being live.
package maps

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cilium/ebpf"

	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/rule"
)

// RuleID names an installed rule: its rule_stats slot.
type RuleID = uint32

// MaxSubtables is the program's compile-time bound.
const MaxSubtables = len(subtableList{}.Subtables)

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
	ident     *rule.Identity // identity(), once made
	// chooses: the table chose its entries among FlowChoices, and took
	// choice (choices.go).
	chooses bool
	choice  choice
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
	// listedUnion is the union mask of the live list as opened, which
	// the cache's key covers.
	listedUnion rule.Key

	maxFlows, maxRules, maxActionSets int

	rules           map[RuleID]*Installed
	groups          map[groupKey][]*Installed // sorted by Seq
	prioGroups      map[uint64][]uint64       // the groups (GroupSeq) of each priority: most have one
	subtables       map[subtableKey]*subtable
	subtablesByID   map[uint32]*subtable
	flows           map[flowKey]RuleID      // each flow's owner: its claimant of the lowest rank
	shadowed        map[flowKey][]RuleID    // a contested flow's other claimants, in rank order
	wanters         map[chosenFlow][]RuleID // the rules that passed over a chosen flow another held (choices.go)
	flowRanges      map[flowKey]flowRanges  // the ranges of the flows of ranged subtables
	actionSets      map[string]*actionSlot  // by content
	actionKeyBySlot map[uint32]string       // slot -> content key
	actionSetBySlot map[uint32]actionSet    // slot -> content
	txPorts         map[uint32]bool         // redirect ifindexes put in the devmap (the kernel drops a gone device's)
	txRefs          map[uint32]int          // redirect ifindex -> rules using it
	// byIdentity finds a rule by its identity (UpdateSource); built on
	// first use, kept by write, dropped (nil) by anything else that
	// changes rules.
	byIdentity map[rule.Identity]RuleID
	// srcChanges counts the changes of each source's rules, and
	// othersUse is what the others held at a count (Room).
	srcChanges map[rule.Source]uint64
	othersUse  map[rule.Source]*othersUse
	// idHint: no rule id below it is free or held, so allocation starts
	// there and not at 1.
	idHint RuleID

	held        []*heldSlots // freed, waiting for a grace period (grace.go)
	deferGrace  bool
	foreignHeld bool // another process left slots held: wait before writing
}

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

// Attachment is what Init recorded of the device the maps were made for.
type Attachment struct {
	Ifindex     int
	AttachFlags uint32 // link.XDPAttachFlags
}

// ReadAttachment reads it from the program's meta map (a device's, or
// its pin, MetaMapName).
func ReadAttachment(meta *ebpf.Map) (Attachment, error) {
	var rec metaRecord
	if err := meta.Lookup(uint32(0), &rec); err != nil {
		return Attachment{}, fmt.Errorf("read meta: %w", err)
	}
	return Attachment{Ifindex: int(rec.Ifindex), AttachFlags: rec.AttachFlags}, nil
}

// Open reads the table state from its maps. parse turns persisted rule
// text back into rules; dev names the device for those rules.
func Open(m *bpf.XdpflowMaps, parse ParseFunc) (*Table, error) {
	t := &Table{
		m:               m,
		maxFlows:        int(m.Flows.MaxEntries()),
		maxRules:        int(m.RuleStats.MaxEntries()),
		maxActionSets:   int(m.ActionSets.MaxEntries()),
		rules:           map[RuleID]*Installed{},
		groups:          map[groupKey][]*Installed{},
		prioGroups:      map[uint64][]uint64{},
		subtables:       map[subtableKey]*subtable{},
		subtablesByID:   map[uint32]*subtable{},
		flows:           map[flowKey]RuleID{},
		shadowed:        map[flowKey][]RuleID{},
		wanters:         map[chosenFlow][]RuleID{},
		flowRanges:      map[flowKey]flowRanges{},
		actionSets:      map[string]*actionSlot{},
		actionKeyBySlot: map[uint32]string{},
		actionSetBySlot: map[uint32]actionSet{},
		txPorts:         map[uint32]bool{},
		idHint:          1,
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
	// packets by (those the union of what the subtables' answers depend
	// on covers: their masks, and what ranged flows check): 1..6, two entries
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
		answers := st.answers()
		union = rule.UnionKey(&union, &answers)
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

// Counters sums the program's per-CPU counters (ReadCounters).
func (t *Table) Counters() ([NumCounters]uint64, error) { return ReadCounters(t.m.Counters) }

func (t *Table) putMeta() error {
	if err := t.m.Meta.Put(uint32(0), &t.meta); err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	return nil
}
