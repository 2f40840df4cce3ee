package maps

import (
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
)

// Slots a change frees (rule ids, action-set slots, subtable ids, the list
// buffer that went idle) may still be in use by program runs that started
// before the change. They are held until an RCU grace period that began
// after they were freed has ended, and only then reused. A strict table
// (the default) waits for that grace period before a change returns; a
// deferred one (the daemon) lets the change return at once; later changes
// allocate around held ids and slots, and wait only for a list buffer (a
// ninth list change within one grace period).

// graceMap is a private map-in-map no program uses: the kernel waits for
// an RCU grace period after every update of a map-in-map (so that running
// programs no longer see the old inner map), which is the wait we need.
var graceMap struct {
	once         sync.Once
	outer, inner *ebpf.Map
	err          error
}

// waitGrace returns after an RCU grace period that began after the call:
// every XDP run that started before the call is over.
func waitGrace() error {
	graceMap.once.Do(func() {
		inner := &ebpf.MapSpec{Name: "xf_grace_in", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
		graceMap.inner, graceMap.err = ebpf.NewMap(inner)
		if graceMap.err != nil {
			return
		}
		graceMap.outer, graceMap.err = ebpf.NewMap(&ebpf.MapSpec{Name: "xf_grace", Type: ebpf.ArrayOfMaps,
			KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
	})
	if graceMap.err != nil {
		return fmt.Errorf("wait for running programs: create map: %w", graceMap.err)
	}
	if err := graceMap.outer.Put(uint32(0), graceMap.inner); err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	return nil
}

// heldSlots are slots freed together, held until their grace period ends.
type heldSlots struct {
	rules      []RuleID
	actionSets []uint32
	subtables  []uint32
	listBuf    int // 1 + the subtable list buffer that stopped being live; 0: none
	done       chan struct{}
	err        error
}

// hold starts the grace period of h in the background.
func (t *Table) hold(h *heldSlots) {
	if len(h.rules)+len(h.actionSets)+len(h.subtables) == 0 && h.listBuf == 0 {
		return
	}
	h.done = make(chan struct{})
	t.held = append(t.held, h)
	graceQueue.add(h)
}

// graceQueue waits for grace periods in one goroutine, for everything
// held since the last wait began. A wait blocks its thread in the kernel,
// and a goroutine blocked in a syscall keeps its P until the runtime's
// monitor takes it back: a goroutine per change could hold every P of a
// small machine while the daemon has work. One waiter also means one wait
// for a burst.
var graceQueue graceWaiter

type graceWaiter struct {
	sync.Mutex
	pending []*heldSlots
	running bool
}

// add queues h for the next wait, starting the waiter if it is idle.
func (q *graceWaiter) add(h *heldSlots) {
	q.Lock()
	defer q.Unlock()
	q.pending = append(q.pending, h)
	if !q.running {
		q.running = true
		go q.run()
	}
}

// run waits until nothing is queued. Each wait begins after everything it
// covers was queued, so after it was freed.
func (q *graceWaiter) run() {
	for {
		q.Lock()
		batch := q.pending
		q.pending = nil
		if len(batch) == 0 {
			q.running = false
			q.Unlock()
			return
		}
		q.Unlock()
		err := waitGrace()
		for _, h := range batch {
			h.err = err
			close(h.done)
		}
	}
}

// release frees the held slots whose grace period is over, without
// waiting. A failed wait keeps its slots held and is returned.
func (t *Table) release() error {
	var err error
	t.held = slices.DeleteFunc(t.held, func(h *heldSlots) bool {
		select {
		case <-h.done:
			if h.err != nil {
				err = h.err
				return false
			}
			return true
		default:
			return false
		}
	})
	return err
}

// Sync waits until no program run that started before it is still going;
// then every held slot is free.
func (t *Table) Sync() error {
	if err := waitGrace(); err != nil {
		return err
	}
	t.held = nil
	t.foreignHeld = false
	return nil
}

// waitFor waits for the grace periods of the held slots that match.
func (t *Table) waitFor(match func(*heldSlots) bool) error {
	for _, h := range t.held {
		if match(h) {
			<-h.done
		}
	}
	return t.release()
}

// heldRules, heldActionSets and heldSubtables are the ids of each kind
// that t.held holds, as sets: allocation looks up each candidate.
func (t *Table) heldRules() map[RuleID]bool {
	return t.heldSet(func(h *heldSlots) []uint32 { return h.rules })
}

func (t *Table) heldActionSets() map[uint32]bool {
	return t.heldSet(func(h *heldSlots) []uint32 { return h.actionSets })
}

func (t *Table) heldSubtables() map[uint32]bool {
	return t.heldSet(func(h *heldSlots) []uint32 { return h.subtables })
}

// heldSet gathers the ids that ids picks out of each of t.held; nil if none.
func (t *Table) heldSet(ids func(*heldSlots) []uint32) map[uint32]bool {
	var set map[uint32]bool
	for _, h := range t.held {
		for _, id := range ids(h) {
			if set == nil {
				set = map[uint32]bool{}
			}
			set[id] = true
		}
	}
	return set
}

// Pending says whether slots are still held (a deferred table).
func (t *Table) Pending() bool { return len(t.held) > 0 }

// DeferGrace makes changes return without waiting for running programs:
// slots they free are held in the background instead. The daemon uses it
// so that a change after a change goes live at once; the table records in
// its meta that slots are held, and another process writing to it waits
// for a grace period first.
func (t *Table) DeferGrace() { t.deferGrace = true }

// Settle waits for every held slot, then records that none is held and
// drops redirect targets no rule uses any more.
func (t *Table) Settle() error {
	if err := t.waitFor(func(*heldSlots) bool { return true }); err != nil {
		return err
	}
	return t.settled()
}

// TrySettle settles if every grace period is over, without waiting; it
// says whether it did.
func (t *Table) TrySettle() (bool, error) {
	if err := t.release(); err != nil || t.Pending() {
		return false, err
	}
	return true, t.settled()
}

func (t *Table) settled() error {
	if err := t.syncTxPorts(); err != nil {
		return err
	}
	if t.meta.Dirty&dirtyGrace == 0 {
		return nil
	}
	t.meta.Dirty &^= dirtyGrace
	return t.putMeta()
}
