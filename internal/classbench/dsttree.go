package classbench

import "math/rand/v2"

// assignDestinations gives every filter a destination address, once the
// source addresses are known, in two passes over one tree (tech report
// §3.4).
//
// The first pass makes destinations follow sources: walking down, a
// filter's next destination bit copies its source bit with the seed's
// correlation probability for that depth. A filter whose copying stops
// (its source prefix is used up, the correlation breaks, or the nesting
// limit is near) is parked as a stub at the node where its own choices
// begin: on a break it is parked under the child opposite its source bit,
// and db_generator diverges the same way when the source prefix ends at
// the next bit. The second pass then walks the tree again, carrying the
// stubs down with the seed's branching and skew, as for sources, except
// that a node's split counts the filters already committed below each
// child, and the heavier child is the one that already has more.
func assignDestinations(d []draft, shape *treeShape, nest int, corr *[33]float64, r *rand.Rand) {
	ids := make([]int32, len(d))
	for i := range ids {
		ids[i] = int32(i)
	}
	t := dstTree{d: d, shape: shape, corr: corr, maxNest: nest, r: r}
	root := &dstNode{}
	t.follow(root, 0, 0, ids, 0)
	t.finish(root, 0, 0, nil, 0)
}

type dstTree struct {
	d       []draft
	shape   *treeShape
	corr    *[33]float64
	maxNest int
	r       *rand.Rand
}

type dstNode struct {
	child  [2]*dstNode
	weight [2]int  // filters sent below each child so far
	stubs  []int32 // filters whose destination is chosen from here down
	holds  bool    // some destination prefix ends here
}

func (n *dstNode) kid(bit int) *dstNode {
	if n.child[bit] == nil {
		n.child[bit] = &dstNode{}
	}
	return n.child[bit]
}

// park leaves id as a stub under n's child on side bit.
func (n *dstNode) park(bit int, id int32) {
	k := n.kid(bit)
	k.stubs = append(k.stubs, id)
	n.weight[bit]++
}

// settle assigns prefix to the filters of ids whose destination ends at
// depth, and returns the others and whether any of them ends at depth+1.
func (t *dstTree) settle(n *dstNode, depth int, prefix uint32, ids []int32) (rest []int32, endsNext bool) {
	for _, id := range ids {
		switch t.d[id].dlen {
		case depth:
			t.d[id].dst = prefix
			n.holds = true
			continue
		case depth + 1:
			endsNext = true
		}
		rest = append(rest, id)
	}
	return rest, endsNext
}

// follow is the first pass at node n (depth, prefix) for filters ids.
func (t *dstTree) follow(n *dstNode, depth int, prefix uint32, ids []int32, above int) {
	rest, endsNext := t.settle(n, depth, prefix, ids)
	if n.holds {
		above++
	}
	if len(rest) > 1 && above >= t.maxNest-1 && endsNext && depth < 31 {
		n.stubs = append(n.stubs, rest...) // let the second pass keep them apart
		return
	}
	var along [2][]int32
	for _, id := range rest {
		f := &t.d[id]
		if f.slen <= depth {
			n.stubs = append(n.stubs, id)
			continue
		}
		bit := addrBit(f.src, depth)
		if f.slen == depth+1 || t.r.Float64() > t.corr[depth+1] {
			n.park(1-bit, id)
			continue
		}
		along[bit] = append(along[bit], id)
	}
	for bit, ids := range along {
		if len(ids) > 0 {
			n.weight[bit] += len(ids)
			t.follow(n.kid(bit), depth+1, childPrefix(prefix, depth, bit), ids, above)
		}
	}
}

// finish is the second pass at node n for the filters ids handed down from
// its parent, plus the stubs parked at n.
func (t *dstTree) finish(n *dstNode, depth int, prefix uint32, ids []int32, above int) {
	all := append(append([]int32(nil), ids...), n.stubs...)
	rest, endsNext := t.settle(n, depth, prefix, all)
	if n.holds {
		above++
	}
	down := func(bit int, ids []int32) {
		t.finish(n.kid(bit), depth+1, childPrefix(prefix, depth, bit), ids, above)
	}
	// Children that hold committed filters must be visited even when
	// nothing more comes their way.
	visitOthers := func(except int) {
		if bit := 1 - except; n.weight[bit] > 0 {
			down(bit, nil)
		}
	}
	if len(rest) == 0 {
		for bit := range 2 {
			if n.weight[bit] > 0 {
				down(bit, nil)
			}
		}
		return
	}
	heavy := 0
	switch {
	case n.weight[1] > n.weight[0]:
		heavy = 1
	case n.weight[1] == n.weight[0]:
		heavy = t.r.IntN(2)
	}
	if len(rest) > 1 && above >= t.maxNest-1 && endsNext && depth < 31 {
		ending, longer := splitByLen(rest, func(id int32) bool { return t.d[id].dlen == depth+1 })
		big, small := longer, ending
		if len(ending) > len(longer) {
			big, small = ending, longer
		}
		n.weight[heavy] += len(big)
		n.weight[1-heavy] += len(small)
		down(heavy, big)
		down(1-heavy, small)
		return
	}
	lv := t.shape[depth]
	if (n.child[0] == nil || n.child[1] == nil) && t.r.Float64() < lv.OneChild {
		// One child: the one that exists already, if any.
		bit := heavy
		if n.child[0] != nil {
			bit = 0
		} else if n.child[1] != nil {
			bit = 1
		}
		n.weight[bit] += len(rest)
		down(bit, rest)
		return
	}
	t.split(n, heavy, rest, lv, down, visitOthers)
}

// split shares rest between n's two children so that, counting what each
// already holds, the heavy one ends up with its skewed share if it can.
func (t *dstTree) split(n *dstNode, heavy int, rest []int32, lv TreeLevel, down func(int, []int32), visitOthers func(int)) {
	total := len(rest) + n.weight[0] + n.weight[1]
	wantHeavy := lv.heavyShare(total)
	toHeavy := wantHeavy - n.weight[heavy]
	toLight := total - wantHeavy - n.weight[1-heavy]
	switch {
	case toLight <= 0:
		n.weight[heavy] += len(rest)
		down(heavy, rest)
		visitOthers(heavy)
	case toHeavy <= 0:
		n.weight[1-heavy] += len(rest)
		down(1-heavy, rest)
		visitOthers(1 - heavy)
	default:
		n.weight[1-heavy] += toLight
		n.weight[heavy] += toHeavy
		down(heavy, rest[toLight:])
		down(1-heavy, rest[:toLight])
	}
}
