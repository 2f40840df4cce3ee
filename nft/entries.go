package nft

import (
	"fmt"

	"github.com/google/nftables/expr"

	"github.com/xdpflow/xdpflow/rule"
)

// maxEntriesPerRule bounds one rule's expansion (sets times ranges times
// VLAN variants); a rule beyond it is punted on a wider match.
const maxEntriesPerRule = 1 << 16

// entriesOf expands a flat rule's predicates into matches. Predicates the
// key cannot express are dropped (widening the match) and reported: the
// rule then becomes a punt.
func entriesOf(r *flatRule) (main, frag []rule.Match, dropped []string) {
	preds := r.preds
	for attempt := 0; attempt <= len(r.preds); attempt++ {
		total := 1
		for _, p := range preds {
			total *= max(len(p.choices), 1)
			if total > maxEntriesPerRule {
				break
			}
		}
		if total > maxEntriesPerRule {
			// Drop the widest predicate.
			w := 0
			for i := range preds {
				if len(preds[i].choices) > len(preds[w].choices) {
					w = i
				}
			}
			dropped = append(dropped, fmt.Sprintf("%s: %d values, too many entries", preds[w].what, len(preds[w].choices)))
			preds = append(append([]pred(nil), preds[:w]...), preds[w+1:]...)
			continue
		}
		m, f, err := expandPreds(preds)
		if err == nil {
			return m, f, dropped
		}
		eu := err.(*errUnsupported)
		dropped = append(dropped, fmt.Sprintf("%s: %s", preds[eu.pred].what, eu.why))
		preds = append(append([]pred(nil), preds[:eu.pred]...), preds[eu.pred+1:]...)
	}
	return nil, nil, append(dropped, "no expressible match")
}

func expandPreds(preds []pred) (main, frag []rule.Match, err error) {
	for _, p := range preds {
		if len(p.choices) == 0 {
			return nil, nil, nil // an empty set: matches nothing
		}
	}
	usesTH := false
	for _, p := range preds {
		for _, f := range p.fields {
			usesTH = usesTH || (f.kind == fPayload && f.base == expr.PayloadBaseTransportHeader)
		}
	}
	idx := make([]int, len(preds))
	seen := map[rule.Match]bool{}
	seenFrag := map[rule.Match]bool{}
	for {
		cb := &combo{ll: hdrBytes{}, nh: hdrBytes{}, th: hdrBytes{}, owner: map[string]int{}, readsTH: usesTH}
		ok := true
		for pi, p := range preds {
			c := p.choices[idx[pi]]
			for fi, f := range p.fields {
				if !cb.add(pi, f, c.parts[fi]) {
					ok = false
				}
			}
		}
		if ok {
			ms, err := cb.build(false)
			if err != nil {
				return nil, nil, err
			}
			main = appendNew(main, seen, ms)
			if usesTH {
				fs, err := cb.build(true)
				if err != nil {
					return nil, nil, err
				}
				frag = appendNew(frag, seenFrag, fs)
			}
		}
		// Next combination.
		i := len(preds) - 1
		for ; i >= 0; i-- {
			idx[i]++
			if idx[i] < len(preds[i].choices) {
				break
			}
			idx[i] = 0
		}
		if i < 0 {
			return main, frag, nil
		}
	}
}

// appendNew appends the matches not seen before.
func appendNew(out []rule.Match, seen map[rule.Match]bool, ms []rule.Match) []rule.Match {
	for _, m := range ms {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}
