package classbench

import "math/rand/v2"

// assignSources gives every filter a source address for its source length
// by growing a binary tree from the root (tech report §3.4): each node
// takes the filters whose prefixes end there, and hands the rest to one
// child or splits them between two, as the seed's branching and skew for
// that depth say. The child that gets the larger share is chosen at random.
func assignSources(d []draft, shape *treeShape, nest int, r *rand.Rand) {
	ids := make([]int32, len(d))
	for i := range ids {
		ids[i] = int32(i)
	}
	t := srcTree{d: d, shape: shape, maxNest: nest, r: r}
	t.grow(0, 0, ids, 0)
}

type srcTree struct {
	d       []draft
	shape   *treeShape
	maxNest int
	r       *rand.Rand
}

// grow handles the node at depth with address prefix, holding the filters
// ids (which it may reorder in place); above counts the prefixes assigned
// on the path above it.
func (t *srcTree) grow(depth int, prefix uint32, ids []int32, above int) {
	ended, endsNext := false, false
	rest := ids[:0]
	for _, id := range ids {
		switch t.d[id].slen {
		case depth:
			t.d[id].src = prefix
			ended = true
			continue
		case depth + 1:
			endsNext = true
		}
		rest = append(rest, id)
	}
	if ended {
		above++
	}
	if len(rest) == 0 {
		return
	}
	heavy := t.r.IntN(2)
	child := func(bit int, ids []int32) {
		t.grow(depth+1, childPrefix(prefix, depth, bit), ids, above)
	}
	// At the nesting limit, prefixes that end one level down go to a child
	// of their own, so that no longer prefix can nest beneath them.
	if len(rest) > 1 && above >= t.maxNest-1 && endsNext && depth < 31 {
		ending, longer := splitByLen(rest, func(id int32) bool { return t.d[id].slen == depth+1 })
		if len(ending) > len(longer) {
			child(heavy, ending)
			child(1-heavy, longer)
		} else {
			child(heavy, longer)
			child(1-heavy, ending)
		}
		return
	}
	lv := t.shape[depth]
	if len(rest) == 1 || t.r.Float64() < lv.OneChild {
		child(heavy, rest)
		return
	}
	light := len(rest) - lv.heavyShare(len(rest))
	child(1-heavy, rest[:light])
	child(heavy, rest[light:])
}

// splitByLen partitions ids, keeping their order, into those for which in
// holds and the others.
func splitByLen(ids []int32, in func(int32) bool) (yes, no []int32) {
	for _, id := range ids {
		if in(id) {
			yes = append(yes, id)
		} else {
			no = append(no, id)
		}
	}
	return yes, no
}
