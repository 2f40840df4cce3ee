package maps

import (
	"errors"
	"fmt"

	"github.com/xdpflow/xdpflow/rule"
)

// Change is one transaction: rules to delete and rules to insert. An insert
// that Replaces an installed rule takes its place in the lookup order (as
// tc filter replace does) and the old rule goes away in the same change.
type Change struct {
	Delete []RuleID
	Insert []Insert
}

// Insert is one rule to install. Its actions' Ifindex must be resolved.
type Insert struct {
	Rule     *rule.Rule
	Replaces RuleID // 0: a new rule
}

// ErrUnsettled is returned with the ids of a change that is live, in the
// datapath and in memory, but whose cleanup (stale flows, subtables or
// specs left in the maps) could not be finished. The change must be
// treated as made.
var ErrUnsettled = errors.New("the change is live but cleaning up after it failed")

// Apply runs one change. On error nothing the change touched stays changed:
// the maps are brought back to the state before it.
func (t *Table) Apply(ch Change) ([]RuleID, error) {
	if err := t.prepareWrite(); err != nil {
		return nil, err
	}
	p, err := t.plan(ch)
	if err != nil {
		return nil, err
	}
	ids := make([]RuleID, len(p.inserted))
	for i, in := range p.inserted {
		ids[i] = in.ID
	}
	if err := t.write(p); err != nil {
		var live *liveChangeError
		if errors.As(err, &live) {
			// Memory holds the new state: repair finishes writing it, and
			// only then are the slots the change freed held for reuse.
			rerr := t.repair(nil)
			if live.freed != nil {
				t.hold(live.freed)
			}
			if rerr != nil {
				t.unsettled = true
				return ids, fmt.Errorf("%w: %v, and repairing failed: %v (the next change or process repairs it)",
					ErrUnsettled, live.err, rerr)
			}
			return ids, nil
		}
		if rerr := t.repair(nil); rerr != nil {
			t.unsettled = true // the next change repairs first
			return nil, fmt.Errorf("%w (and restoring the previous state failed: %v)", err, rerr)
		}
		return nil, err
	}
	return ids, nil
}

// prepareWrite frees what is held and no longer needs to be. Slots another
// process left held are unknown here: wait a grace period for all of them.
func (t *Table) prepareWrite() error {
	if t.unsettled {
		// The last change is live but its cleanup failed: finish it
		// before anything else is written.
		t.unsettled = false
		if err := t.repair(nil); err != nil {
			t.unsettled = true
			return fmt.Errorf("%w: %v", ErrUnsettled, err)
		}
	}
	if t.foreignHeld {
		return t.Sync()
	}
	return t.release()
}
