package classbench

import "math"

// treeShape is the per-depth branching of an address tree.
type treeShape [33]TreeLevel

// heavyShare is how many of n filters a two-child node at this depth sends
// to its heavier child, so that 1 - light/heavy comes out at the skew.
func (lv TreeLevel) heavyShare(n int) int {
	return int(math.Floor(float64(n) / (2 - min(max(lv.Skew, 0), 1))))
}

// balanceTop is db_generator's -b adjustment for sets larger than the one
// the seed was measured on: spread the extra filters over more address
// space by balancing the top of the tree, rather than piling them into the
// seed's few subtrees (which would make many of them duplicates).
//
// The imbalance of a depth is D = 2·(p1 + p2·skew), counting a one-child
// node as fully skewed: 2 when every node sends all its filters one way, 0
// when every node splits them evenly. The budget, n/Scale, is spent from the
// root down: depths whose D fits in what is left become perfectly balanced
// (two children, skew 0); the first that does not fit is balanced part
// way, first by turning one-child nodes into two-child ones and, if that is
// not enough, by lowering the skew, and the depths below keep their shape.
func (t *treeShape) balanceTop(budget float64) {
	for d := 0; d < 32 && budget > 0; d++ {
		lv := &t[d]
		imbalance := 2 * (1 - lv.TwoChildren + lv.Skew*lv.TwoChildren)
		if imbalance <= budget {
			*lv = TreeLevel{OneChild: 0, TwoChildren: 1, Skew: 0}
			budget -= imbalance
			continue
		}
		// What giving every node two children would remove on its own.
		bySplitting := imbalance - 2*lv.Skew
		if bySplitting > budget {
			lv.TwoChildren = (1 - (imbalance-budget)/2) / (1 - lv.Skew)
			lv.OneChild = 1 - lv.TwoChildren
		} else {
			// db_generator lowers the skew by the whole remaining budget,
			// without deducting what the splitting removed; we do the same
			// (the difference only shows where both p1 and 1-skew are big).
			lv.TwoChildren, lv.OneChild = 1, 0
			lv.Skew = max(lv.Skew-budget/2, 0)
		}
		return
	}
}

// childPrefix is the address of the child of a node at depth d (whose
// address has only its top d bits set) on side bit.
func childPrefix(addr uint32, d int, bit int) uint32 {
	return addr | uint32(bit)<<(31-d)
}

// addrBit is bit d (0 = most significant) of addr.
func addrBit(addr uint32, d int) int {
	return int(addr>>(31-d)) & 1
}
