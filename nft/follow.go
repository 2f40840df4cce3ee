package nft

import (
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Follow takes nftables notifications (NFNLGRP_NFTABLES) in the order
// they came. The kernel sends a commit's changes, then NFT_MSG_NEWGEN with
// the generation the commit made. A commit of the generation after the
// one the reader holds is applied to what it keeps: its rules are added
// where their positions put them and deleted by handle, and every other
// kind of object it changed is marked stale. A commit the reader has read
// already is passed over, and one after a generation it has not seen
// makes everything stale. Messages of a commit whose NEWGEN has not come
// wait for it.
func (r *Reader) Follow(msgs []netlink.Message) {
	for _, m := range msgs {
		if uint16(m.Header.Type)>>8 != unix.NFNL_SUBSYS_NFTABLES {
			continue
		}
		if uint16(m.Header.Type)&0xff != unix.NFT_MSG_NEWGEN {
			r.unfinished = append(r.unfinished, m)
			continue
		}
		gen, ok := GenOf(m)
		if !ok {
			r.Lost()
			continue
		}
		r.commit(r.unfinished, gen)
		r.unfinished = r.unfinished[:0]
	}
}

// Reread makes the next Read read everything again, keeping what Follow
// knows of the notifications.
func (r *Reader) Reread() { r.stale = KindAll }

// Lost tells the reader that notifications were lost (the socket
// overran): anything may have changed.
func (r *Reader) Lost() {
	r.stale, r.genKnown = KindAll, false
	r.unfinished = r.unfinished[:0]
}

// commit applies one commit's messages, which made generation gen.
func (r *Reader) commit(msgs []netlink.Message, gen uint32) {
	switch {
	case r.genKnown && gen == r.gen && r.genRead:
		// Read may have seen this generation's id and the rules before
		// it: nf_tables_commit publishes the id, then switches the rules.
		for _, m := range msgs {
			r.stale |= KindsOf(uint16(m.Header.Type) & 0xff)
		}
		return
	case r.genKnown && int32(gen-r.gen) <= 0:
		return // read already
	case !r.genKnown || gen != r.gen+1:
		r.Lost()
		return
	}
	r.genRead = false
	var rules []netlink.Message
	for _, m := range msgs {
		k := KindsOf(uint16(m.Header.Type) & 0xff)
		if k != KindRules {
			r.stale |= k
			continue
		}
		if len(m.Data) > 0 && m.Data[0] == Family {
			rules = append(rules, m)
		}
	}
	if r.stale&KindRules == 0 && r.rules != nil && !r.applyRules(rules) {
		r.stale |= KindRules
	}
	r.gen = gen
}

// applyRules applies one commit's rule notifications to the kept rules,
// or says it cannot.
//
// A new rule's NFTA_RULE_POSITION is the handle of the rule before it, as
// the chain's list stood when the commit notified it: a rule added later
// in the commit may be that one, so such a rule waits for it. Without a
// position the rule was first or last in the list (nf_tables_rule_notify),
// and NLM_F_APPEND, which says only how it was added, tells which unless
// the commit deleted rules of the chain before: an insert before a rule
// the same commit deletes can end last without NLM_F_APPEND, a replace
// (NLM_F_APPEND too) first. There, the rules are read again.
func (r *Reader) applyRules(msgs []netlink.Message) bool {
	c := &ruleCommit{r: r, lists: map[string][]*ruleInfo{}, deletes: map[string]bool{}}
	for _, m := range msgs {
		if uint16(m.Header.Type)&0xff != unix.NFT_MSG_NEWRULE {
			ru, _, err := decodeRule(m, Family)
			if err != nil {
				return false
			}
			c.deletes[ru.Table+"/"+ru.Chain] = true
		}
	}
	for _, m := range msgs {
		if !c.apply(m) {
			return false
		}
	}
	if len(c.waiting) > 0 {
		return false
	}
	for key, l := range c.lists {
		if len(l) == 0 {
			delete(r.rules, key)
		} else {
			r.rules[key] = l
		}
	}
	if len(r.edits)+len(c.edits) > maxEdits {
		r.edits, r.editsEpoch = nil, editEpochs.Add(1) // compilers start afresh
	} else {
		r.edits = append(r.edits, c.edits...)
	}
	return true
}

// ruleCommit is one commit's rule notifications being applied.
type ruleCommit struct {
	r       *Reader
	lists   map[string][]*ruleInfo // the chains changed, copied
	deletes map[string]bool        // chains the commit deletes from
	waiting []waitingRule
	edits   []ruleEdit
}

// waitingRule is a new rule whose rule before it has not come yet.
type waitingRule struct {
	ru   *ruleInfo
	prev uint64
}

func (c *ruleCommit) list(key string) []*ruleInfo {
	l, ok := c.lists[key]
	if !ok {
		l = slices.Clone(c.r.rules[key])
		c.lists[key] = l
	}
	return l
}

func (c *ruleCommit) insertAfter(ru *ruleInfo, prev uint64) bool {
	key := ru.Table + "/" + ru.Chain
	l := c.list(key)
	i := slices.IndexFunc(l, func(x *ruleInfo) bool { return x.Handle == prev })
	if i < 0 {
		return false
	}
	c.lists[key] = slices.Insert(l, i+1, ru)
	return true
}

// apply applies one notification, or says it cannot.
func (c *ruleCommit) apply(m netlink.Message) bool {
	ru, prev, err := decodeRule(m, Family)
	if err != nil {
		return false
	}
	isNew := uint16(m.Header.Type)&0xff == unix.NFT_MSG_NEWRULE
	key := ru.Table + "/" + ru.Chain
	l := c.list(key)
	if i := slices.IndexFunc(l, func(x *ruleInfo) bool { return x.Handle == ru.Handle }); i >= 0 {
		if isNew {
			return false // a handle the reader has already
		}
		c.edits = append(c.edits, ruleEdit{rule: l[i], chain: key})
		c.lists[key] = slices.Delete(l, i, i+1)
		return true
	}
	switch {
	case !isNew:
		return false // a deleted rule the reader does not have
	case prev != 0:
		c.edits = append(c.edits, ruleEdit{rule: &ru, chain: key, added: true})
		if !c.insertAfter(&ru, prev) {
			c.waiting = append(c.waiting, waitingRule{&ru, prev})
			return true
		}
	case c.deletes[key]:
		// First or last as the list stood after the commit's earlier
		// deletes: which, the reader cannot tell.
		return false
	case m.Header.Flags&netlink.Append != 0:
		c.lists[key] = append(l, &ru)
		c.edits = append(c.edits, ruleEdit{rule: &ru, chain: key, added: true})
	default:
		c.lists[key] = slices.Insert(l, 0, &ru)
		c.edits = append(c.edits, ruleEdit{rule: &ru, chain: key, added: true})
	}
	// Rules waiting for this one (or for one placed by them) go in.
	for placed := true; placed; {
		placed = false
		for i := 0; i < len(c.waiting); i++ {
			if c.insertAfter(c.waiting[i].ru, c.waiting[i].prev) {
				c.waiting = slices.Delete(c.waiting, i, i+1)
				placed = true
				i--
			}
		}
	}
	return true
}

// ruleEdit is a rule Follow added to or deleted from the rules the
// reader keeps.
type ruleEdit struct {
	rule  *ruleInfo
	chain string // "table/chain"
	added bool
}

// maxEdits bounds the edits kept since the last rule dump: a compiler
// further behind compiles afresh.
const maxEdits = 1 << 16
