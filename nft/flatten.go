package nft

import (
	"fmt"
	"strings"
)

// flattener turns one base chain's rules into flat rules: jumps and gotos
// inlined under the jumping rule's match, verdicts made what XDP does.
type flattener struct {
	rs       *Ruleset
	env      *env
	base     *Chain
	lastBase bool
	// kept and used: a Compiler's flat rules of base chain rules, from the
	// compile before and for the next; unkept: a base chain rule's could
	// not be kept.
	kept, used map[flatKey]*flatOf
	unkept     bool
	// takesAll: the base chain rule that takes every packet, if any
	// (the rules after it are never reached).
	takesAll *ruleInfo
}

// flatKey is what a base chain rule's flat rules depend on.
type flatKey struct {
	r        *ruleInfo
	lastBase bool
	policy   uint32
	setsGen  uint64
	ifindex  int
}

// flatOf is one rule's flat rules, and why the rules after it are never
// reached, if they are not.
type flatOf struct {
	flat        []flatRule
	unreachable string
	jumps       bool // into a chain, whose rules change without r
}

const maxJumpDepth = 16

// chain flattens c's rules under the context predicates ctx.
func (f *flattener) chain(c *Chain, ctx []pred, depth int) []flatRule {
	var out []flatRule
	unreachable := ""
	for _, r := range c.Rules {
		if unreachable != "" {
			// The rules after one that takes every packet are skipped,
			// whatever they are: no result of them is changed in place.
			f.unkept = f.unkept || depth == 0
			out = append(out, flatRule{name: fmt.Sprintf("%s/%d", chainName(c), r.Handle), skip: unreachable})
			continue
		}
		fo := f.rule(c, r, ctx, depth)
		out = append(out, fo.flat...)
		unreachable = fo.unreachable
		if unreachable != "" && depth == 0 {
			f.takesAll = r
		}
	}
	return out
}

// rule flattens rule r of chain c, or takes what a Compiler kept of it.
func (f *flattener) rule(c *Chain, r *ruleInfo, ctx []pred, depth int) *flatOf {
	keep := depth == 0 && f.used != nil
	var key flatKey
	if keep {
		key = flatKey{r, f.lastBase, f.base.Policy, f.rs.setsGen, f.rs.Ifindex}
		if fo := f.kept[key]; fo != nil {
			f.used[key] = fo
			return fo
		}
	}
	fo := f.flatten(c, r, ctx, depth)
	if keep && !fo.jumps && keepable(fo.flat) {
		f.used[key] = fo
	} else if keep {
		f.unkept = true
	}
	return fo
}

// flatten flattens rule r of chain c under ctx.
func (f *flattener) flatten(c *Chain, r *ruleInfo, ctx []pred, depth int) *flatOf {
	name := fmt.Sprintf("%s/%d", chainName(c), r.Handle)
	one := func(fr flatRule) *flatOf { return &flatOf{flat: []flatRule{fr}} }
	tr := translate(r, f.env)
	if tr.never != "" {
		return one(flatRule{name: name, skip: "never matches: " + tr.never})
	}
	preds := append(append([]pred(nil), ctx...), tr.preds...)
	// Flat rules made of r's own match alone are kept by a Compiler.
	var src *ruleInfo
	if depth == 0 {
		src = r
	}
	if len(tr.punt) > 0 {
		return one(flatRule{name: name, preds: preds, pass: true, src: src,
			reason: "punted (its match goes to the kernel): " + strings.Join(tr.punt, ", ")})
	}
	if tr.verdict.kind == vReturn && len(tr.preds) == 0 && !c.Base {
		// The end of a jumped-to chain: back to the caller.
		fo := one(flatRule{name: name, skip: "return: nothing to install (the caller's next rule follows)"})
		fo.unreachable = fmt.Sprintf("never reached: rule %d returns every packet first", r.Handle)
		return fo
	}
	groups := []flatRule{{name: name, preds: preds, verdict: tr.verdict}}
	if tr.vmap {
		groups = splitVmap(name, preds)
	}
	fo := &flatOf{}
	for i, g := range groups {
		fl := f.verdict(c, g, depth)
		if k := g.verdict.kind; k == vJump || k == vGoto {
			fo.jumps = true
		} else if src != nil {
			for j := range fl {
				fl[j].src, fl[j].idx = src, len(groups)*j+i+1
			}
		}
		fo.flat = append(fo.flat, fl...)
	}
	if len(tr.preds) == 0 && !tr.vmap && terminal(tr.verdict.kind) {
		fo.unreachable = fmt.Sprintf("never reached: rule %d before it takes every packet", r.Handle)
	}
	return fo
}

// keepable says whether a base chain rule's flat rules are its own alone:
// none came from a jumped-to chain or depends on a forward check, which
// change without the rule.
func keepable(fl []flatRule) bool {
	for i := range fl {
		if fl[i].skip == "" && fl[i].src == nil || fl[i].verdict.kind == vFwd {
			return false
		}
	}
	return true
}

func terminal(k verdictKind) bool {
	return k == vAccept || k == vDrop || k == vFwd || k == vGoto || k == vReturn
}

// splitVmap turns a verdict-map rule into one rule per verdict.
func splitVmap(name string, preds []pred) []flatRule {
	last := preds[len(preds)-1]
	var order []string
	byVerdict := map[string][]choice{}
	vds := map[string]verdict{}
	for _, c := range last.choices {
		k := c.verdict.String()
		if _, ok := byVerdict[k]; !ok {
			order = append(order, k)
			vds[k] = *c.verdict
		}
		byVerdict[k] = append(byVerdict[k], c)
	}
	var out []flatRule
	for _, k := range order {
		p := last
		p.choices = byVerdict[k]
		ps := append(append([]pred(nil), preds[:len(preds)-1]...), p)
		out = append(out, flatRule{name: name, preds: ps, verdict: vds[k]})
	}
	return out
}

// verdict flattens one rule's verdict.
func (f *flattener) verdict(c *Chain, r flatRule, depth int) []flatRule {
	switch r.verdict.kind {
	case vAccept:
		if !f.lastBase {
			r.pass = true
			r.reason = "accept: the next base chain on the hook still runs, so the kernel gets the packet"
		}
		return []flatRule{r}
	case vDrop:
		return []flatRule{r}
	case vFwd:
		if chains := f.rs.EgressChains(ifName(r.verdict.ifindex)); len(chains) > 0 {
			r.pass, r.reason = true, fmt.Sprintf("punted: fwd to %s: netdev egress chain %s runs on its way out, which XDP would skip",
				ifName(r.verdict.ifindex), strings.Join(chains, ", "))
			return []flatRule{r}
		}
		if f.rs.CheckFwd != nil {
			if err := f.rs.CheckFwd(r.verdict.ifindex); err != nil {
				r.pass, r.reason = true, "punted: fwd to "+ifName(r.verdict.ifindex)+": "+err.Error()
			}
		}
		return []flatRule{r}
	case vNone:
		return []flatRule{{name: r.name, skip: "no verdict: does not change any packet's fate"}}
	case vReturn:
		if c.Base {
			return []flatRule{f.policy(r)}
		}
		r.pass, r.reason = true, "punted: return from a jumped-to chain"
		return []flatRule{r}
	case vJump, vGoto:
		target := f.rs.chains[c.Table+"/"+r.verdict.chain]
		if target == nil || depth >= maxJumpDepth {
			r.pass, r.reason = true, fmt.Sprintf("punted: %s: chain not found or nested too deep", r.verdict)
			return []flatRule{r}
		}
		out := f.chain(target, r.preds, depth+1)
		if r.verdict.kind == vGoto {
			// The rest of the calling chain is skipped.
			if c.Base {
				out = append(out, f.policy(r))
			} else {
				out = append(out, flatRule{name: r.name, preds: r.preds, pass: true,
					reason: "punted: goto from a jumped-to chain"})
			}
		}
		return out
	}
	return nil
}

func (f *flattener) policy(r flatRule) flatRule {
	if f.base.Policy == nfDrop {
		return flatRule{name: r.name, preds: r.preds, verdict: verdict{kind: vDrop}}
	}
	if !f.lastBase {
		return flatRule{name: r.name, preds: r.preds, pass: true,
			reason: "goto: the next base chain on the hook still runs, so the kernel gets the packet"}
	}
	return flatRule{name: r.name, preds: r.preds, verdict: verdict{kind: vAccept}}
}
