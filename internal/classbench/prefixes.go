package classbench

import "math"

// lengthTable is one port-pair class's joint distribution of prefix
// lengths, as (total length, source length given the total).
type lengthTable struct {
	total cdf     // over total length 0..64
	src   [65]cdf // over source length 0..32, for each total
}

// newLengthTable builds the table of one class from its seed section,
// smoothed by s (0 keeps the seed's spikes as they are).
func newLengthTable(pairs []TotalLength, s int) lengthTable {
	tot, src := smoothLengths(pairs, s)
	var t lengthTable
	for total := range tot {
		// Only source lengths that leave a destination length in 0..32.
		for l := range src[total] {
			if l > total || total-l > 32 {
				src[total][l] = 0
			}
		}
		t.src[total] = newCDF(src[total][:])
		if t.src[total].total() == 0 {
			tot[total] = 0
		}
	}
	t.total = newCDF(tot[:])
	return t
}

// pick draws a (source, destination) length pair; uTotal picks the total
// (after the scope adjustment), uSrc the source part of it.
func (t *lengthTable) pick(uTotal, uSrc float64) (srcLen, dstLen int) {
	total := t.total.index(uTotal)
	srcLen = t.src[total].index(uSrc)
	return srcLen, total - srcLen
}

// smoothLengths implements the smoothing adjustment. Each spike of the
// total-length distribution is spread over totals t-s..t+s with binomial
// weights of order 2s, which for large s tends to a flat distribution.
// A point moved m away from its total t also has to move its source length
// by up to m (the m bits come off or go onto either address), so the
// source distribution of total t±m gets the spike's source lengths spread
// over the m+1 ways of splitting m, widened by the leftover distance s-m
// (half of it on each side), again with binomial weights. At t itself the
// source lengths are spread by s rounded down to even.
//
// As in db_generator, what a spike contributes to the source distribution
// of its own total is not weighted by the spike's frequency, while what it
// contributes to its neighbours' is; each source distribution is
// normalised on its own afterwards, so this only matters where spreads
// overlap, and we keep it to draw what db_generator draws.
func smoothLengths(pairs []TotalLength, s int) (tot [65]float64, src [65][33]float64) {
	bin := make([][]float64, 2*s+1)
	for k := range bin {
		bin[k] = binomial(k)
	}
	centre, wide := bin[2*(s/2)], bin[2*s]
	for _, p := range pairs {
		if p.Weight <= 0 {
			continue
		}
		spread(tot[:], p.Total-s, wide, p.Weight)
		for _, l := range p.Src {
			if l.Weight <= 0 {
				continue
			}
			spread(src[p.Total][:], l.Len-s/2, centre, l.Weight)
			for m := 1; m <= s; m++ {
				pad := (s - m) / 2
				w := bin[m+2*pad]
				if t := p.Total - m; t >= 0 {
					spread(src[t][:], l.Len-m-pad, w, l.Weight*p.Weight)
				}
				if t := p.Total + m; t <= 64 {
					spread(src[t][:], l.Len-pad, w, l.Weight*p.Weight)
				}
			}
		}
	}
	return tot, src
}

// spread adds scale·w[i] to dst[start+i], dropping what falls outside dst.
func spread(dst []float64, start int, w []float64, scale float64) {
	for i, b := range w {
		if j := start + i; j >= 0 && j < len(dst) {
			dst[j] += b * scale
		}
	}
}

// binomial returns the probabilities C(k,i)/2^k, i = 0..k.
func binomial(k int) []float64 {
	w := make([]float64, k+1)
	w[0] = math.Pow(0.5, float64(k))
	for i := 1; i <= k; i++ {
		w[i] = w[i-1] * float64(k-i+1) / float64(i)
	}
	return w
}
