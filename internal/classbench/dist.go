package classbench

import "sort"

// cdf draws an index with probability proportional to its weight. It holds
// the running sums of the weights, which need not add up to 1: the seeds'
// fractions are rounded, and db_generator's habit of forcing the last entry
// to take up the slack can hand probability to an entry of weight zero.
type cdf []float64

func newCDF(weights []float64) cdf {
	c := make(cdf, len(weights))
	var sum float64
	for i, w := range weights {
		sum += max(w, 0)
		c[i] = sum
	}
	return c
}

func (c cdf) total() float64 {
	if len(c) == 0 {
		return 0
	}
	return c[len(c)-1]
}

// index maps u in [0,1) to an index, never one of weight zero. The cdf must
// have a positive total.
func (c cdf) index(u float64) int {
	x := u * c.total()
	if i := sort.Search(len(c), func(i int) bool { return c[i] > x }); i < len(c) {
		return i
	}
	// u*total rounded up to total: the last entry of positive weight.
	return sort.Search(len(c), func(i int) bool { return c[i] >= c.total() })
}

// scoped applies the tech report's scope adjustment to a uniform variate u:
// with scope in [-1,1], u·(1 − scope·(1 − u)) still spans [0,1) but leans
// towards 0 for positive scope and towards 1 for negative scope. The tables
// it indexes (port-pair classes, total prefix lengths) run from the least to
// the most specific, so positive scope gives wider filters.
func scoped(u, scope float64) float64 {
	return u * (1 - scope*(1-u))
}
