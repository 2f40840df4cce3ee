package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// xdpOp is one XDP-only change: ins added (del nil), del deleted (ins
// nil), or del replaced by ins, which takes its place.
type xdpOp struct{ del, ins *editRule }

// xdpChunk is changes that one table transaction makes exactly as one
// process per command would. A transaction works out which of a pref's
// mask groups survive its deletes before it places its inserts, and a
// flower mask keeps its place in the lookup order while a filter uses it:
// a delete after an insert (a rule joining a mask group, then its last
// other member leaving) would end in another order. So a chunk is its
// deletes, then its inserts, and a delete or replace after an insert
// starts the next one. A batch of adds is one chunk.
type xdpChunk struct {
	ops       []xdpOp
	inserting bool
}

// queue adds op to the edit's XDP-only changes.
func (e *filterEdit) queue(op xdpOp) {
	n := len(e.chunks)
	if n == 0 || (op.del != nil && e.chunks[n-1].inserting) {
		e.chunks = append(e.chunks, xdpChunk{})
		n++
	}
	c := &e.chunks[n-1]
	c.ops = append(c.ops, op)
	c.inserting = c.inserting || op.ins != nil
}

// writeXDP writes the queued XDP-only changes, chunk by chunk.
func (e *filterEdit) writeXDP() error {
	for len(e.chunks) > 0 {
		c := e.chunks[0]
		var ch maps.Change
		var inserted []*editRule
		for _, op := range c.ops {
			switch {
			case op.ins == nil:
				ch.Delete = append(ch.Delete, op.del.id)
			default:
				in := maps.Insert{Rule: op.ins.rule}
				if op.del != nil {
					in.Replaces = op.del.id
				}
				ch.Insert = append(ch.Insert, in)
				inserted = append(inserted, op.ins)
			}
		}
		ids, err := e.s.table.Apply(ch)
		if err != nil {
			if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) {
				return fmt.Errorf("filter: %w (%v)", maps.ErrTableFull, err)
			}
			return fmt.Errorf("filter: %w", err)
		}
		for i, er := range inserted {
			er.id = ids[i]
		}
		e.chunks = e.chunks[1:]
		e.applied = true
	}
	return nil
}

// mirrorTC mirrors the device's TC filters again, and takes the rules it
// leaves as the edit's view of the TC ones.
func (e *filterEdit) mirrorTC() error {
	filters, err := offload.KernelFilters(e.s.dev.Name, e.s.dev.Ifindex)
	if err == nil {
		err = offload.MirrorTC(e.s.table, e.s.dev.Name, e.s.dev.Ifindex, filters, e.fwd, e.policy)
	}
	if err != nil {
		return fmt.Errorf("filter: changed in TC, which handles its packets; XDP: %w", err)
	}
	e.mirror = false
	for _, p := range e.prefs {
		for _, er := range p.byHandle {
			if er.rule.Source == rule.SourceTC {
				e.remove(er)
			}
		}
	}
	for _, in := range tcRules(e.s.table) {
		if in.Rule.Source == rule.SourceTC {
			e.put(&editRule{rule: in.Rule, id: in.ID})
		}
	}
	return nil
}

// flushXDP brings the table up to the commands so far, before a command
// changes TC: TC's earlier changes mirrored, then the XDP-only ones since,
// in the order the commands made them.
func (e *filterEdit) flushXDP() error {
	if len(e.chunks) == 0 {
		return nil
	}
	if e.mirror {
		if err := e.mirrorTC(); err != nil {
			return err
		}
	}
	if err := e.writeXDP(); err != nil {
		return fmt.Errorf("%w (the XDP-only filters of the commands before)", err)
	}
	return nil
}

// commit writes what the edit has not written yet: TC's changes mirrored,
// then the XDP-only changes since, unless discard (a batch that stopped
// at a command that failed leaves those out).
func (e *filterEdit) commit(discard bool) error {
	if e.tc != nil {
		e.tc.Close()
		e.tc = nil
	}
	if e.mirror {
		if err := e.mirrorTC(); err != nil {
			return err
		}
		e.applied = true
	}
	if discard || len(e.chunks) == 0 {
		e.chunks = nil
		return nil
	}
	if err := e.writeXDP(); err != nil {
		return err
	}
	if e.noteXDP {
		fmt.Fprintf(os.Stderr, "xdpflow: note: this kernel has no cls_flower: the filter is in XDP only, as with skip_sw\n")
	}
	return nil
}
