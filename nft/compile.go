package nft

import (
	"fmt"
	"net"
	"strings"
	"unsafe"

	"github.com/google/nftables/expr"

	"github.com/xdpflow/xdpflow/rule"
)

// Status is what became of one nft rule (or a base chain's policy).
type Status struct {
	Name      string // family/table/chain/handle, or .../policy
	Offloaded bool
	Reason    string
	Verdict   string
	FwdTo     []int        // the ifindexes its fwd sends to, offloaded or not
	Parts     []*rule.Rule // installed parts that carry the rule's own verdict (a punt's is pass)
	// Companions are pass parts that keep a rule exact without being its
	// action: its fragments, which nft matches on transport bytes and the
	// key cannot. Their packets are nft's to count.
	Companions []*rule.Rule
}

// Limits bound what the compile may use: the room the device's table has
// left for nft rules.
type Limits struct {
	Subtables, Flows, Rules int
}

// maxEntriesPerRule bounds one rule's expansion (sets times ranges times
// VLAN variants); a rule beyond it is punted on a wider match.
const maxEntriesPerRule = 1 << 16

// flatRule is one rule after jumps are flattened: a conjunction of
// predicates and what to do.
type flatRule struct {
	name    string
	preds   []pred
	verdict verdict
	pass    bool   // punt: hand the packet to the kernel
	reason  string // why not offloaded (punts, notes)
	skip    string // not installed at all, and why
}

// Compile turns the ruleset into rules for the device's table, in lookup
// order, and a status per nft rule.
func Compile(rs *Ruleset, lim Limits) ([]*rule.Rule, []*Status) {
	var flat []flatRule
	for i, c := range rs.Base {
		if tag, reason := rs.puntFrom(c); reason != "" {
			// From here on every packet goes to the kernel, which runs
			// these chains and what xdpflow cannot see in hook order.
			flat = append(flat, flatRule{name: chainName(c) + "/" + tag, pass: true, reason: reason})
			for _, later := range rs.Base[i:] {
				for _, r := range later.Rules {
					flat = append(flat, flatRule{name: fmt.Sprintf("%s/%d", chainName(later), r.Handle), skip: reason})
				}
			}
			break
		}
		e := &env{dev: rs.Dev, ifindex: rs.Ifindex, sets: rs.sets[c.Table]}
		last := i == len(rs.Base)-1
		f := &flattener{rs: rs, env: e, base: c, lastBase: last}
		flat = append(flat, f.chain(c, nil, 0)...)
		if c.Policy == nfDrop {
			flat = append(flat, flatRule{name: chainName(c) + "/policy", verdict: verdict{kind: vDrop}})
		}
	}
	return assemble(flat, rs, lim)
}

// puntFrom says why base chain c and those after it cannot run in XDP
// (and a tag for the punt's name), or "": the device is blocked, a chain
// of another table has c's priority (the kernel runs the one registered
// last first, and across tables handles do not tell which that is), or a
// hook xdpflow does not mirror runs before c.
func (rs *Ruleset) puntFrom(c *Chain) (tag, reason string) {
	if rs.Blocked != nil {
		return "blocked", "punted: " + rs.Blocked.Error()
	}
	if other := rs.tieAcrossTables(c); other != nil {
		return "order", fmt.Sprintf("punted: base chains %s/%s and %s/%s have priority %d, and the kernel's order between chains of different tables is not visible",
			c.Table, c.Name, other.Table, other.Name, c.Priority)
	}
	if in := rs.inetBefore(c); in != nil {
		return "inet", fmt.Sprintf("punted: %s (priority %d) runs before it, and xdpflow does not mirror it", in.foreign, in.Priority)
	}
	return "", ""
}

// tieAcrossTables is a base chain of another table with c's priority, or
// nil.
func (rs *Ruleset) tieAcrossTables(c *Chain) *Chain {
	for _, o := range rs.Base {
		if o.Priority == c.Priority && o.Table != c.Table {
			return o
		}
	}
	return nil
}

// inetBefore is an inet ingress chain that runs before the netdev base
// chain c (lower priority; at equal priority registration decides, which
// is not visible across families), or nil.
func (rs *Ruleset) inetBefore(c *Chain) *Chain {
	for _, in := range rs.inetIngress {
		if in.Priority <= c.Priority {
			return in
		}
	}
	return nil
}

func chainName(c *Chain) string { return fmt.Sprintf("netdev/%s/%s", c.Table, c.Name) }

type flattener struct {
	rs       *Ruleset
	env      *env
	base     *Chain
	lastBase bool
}

const maxJumpDepth = 16

// chain flattens c's rules under the context predicates ctx.
func (f *flattener) chain(c *Chain, ctx []pred, depth int) []flatRule {
	var out []flatRule
	unreachable := ""
	for _, r := range c.Rules {
		name := fmt.Sprintf("%s/%d", chainName(c), r.Handle)
		if unreachable != "" {
			out = append(out, flatRule{name: name, skip: unreachable})
			continue
		}
		tr := translate(r, f.env)
		if tr.never != "" {
			out = append(out, flatRule{name: name, skip: "never matches: " + tr.never})
			continue
		}
		preds := append(append([]pred(nil), ctx...), tr.preds...)
		if len(tr.punt) > 0 {
			out = append(out, flatRule{name: name, preds: preds, pass: true,
				reason: "punted (its match goes to the kernel): " + strings.Join(tr.punt, ", ")})
			continue
		}
		if tr.verdict.kind == vReturn && len(tr.preds) == 0 && !c.Base {
			// The end of a jumped-to chain: back to the caller.
			unreachable = fmt.Sprintf("never reached: rule %d returns every packet first", r.Handle)
			out = append(out, flatRule{name: name, skip: "return: nothing to install (the caller's next rule follows)"})
			continue
		}
		groups := []flatRule{{name: name, preds: preds, verdict: tr.verdict}}
		if tr.vmap {
			groups = splitVmap(name, preds)
		}
		for _, g := range groups {
			out = append(out, f.verdict(c, g, depth)...)
		}
		if len(tr.preds) == 0 && !tr.vmap && terminal(tr.verdict.kind) {
			unreachable = fmt.Sprintf("never reached: rule %d before it takes every packet", r.Handle)
		}
	}
	return out
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

// Key byte offsets of the fields nft payloads map onto.
var (
	offEthDst   = int(unsafe.Offsetof(rule.Key{}.EthDst))
	offEthSrc   = int(unsafe.Offsetof(rule.Key{}.EthSrc))
	offEthType  = int(unsafe.Offsetof(rule.Key{}.EthType))
	offVlanTCI  = int(unsafe.Offsetof(rule.Key{}.VlanTci))
	offIPProto  = int(unsafe.Offsetof(rule.Key{}.IpProto))
	offIPTos    = int(unsafe.Offsetof(rule.Key{}.IpTos))
	offIPTTL    = int(unsafe.Offsetof(rule.Key{}.IpTtl))
	offIPFrag   = int(unsafe.Offsetof(rule.Key{}.IpFrag))
	offTCPFlags = int(unsafe.Offsetof(rule.Key{}.TcpFlags))
	offSrcIP    = int(unsafe.Offsetof(rule.Key{}.SrcIp))
	offDstIP    = int(unsafe.Offsetof(rule.Key{}.DstIp))
	offSrcPort  = int(unsafe.Offsetof(rule.Key{}.SrcPort))
	offICMPType = int(unsafe.Offsetof(rule.Key{}.IcmpType))
	offICMPCode = int(unsafe.Offsetof(rule.Key{}.IcmpCode))
)

const keySize = int(unsafe.Sizeof(rule.Key{}))

// keyBuf is a masked key under construction.
type keyBuf struct {
	val, mask [keySize]byte
}

// put ANDs a condition on one key byte in; false if it contradicts one
// already there.
func (k *keyBuf) put(off int, v, m byte) bool {
	return andByte(&k.val[off], &k.mask[off], v, m)
}

// andByte ANDs "under mask m the byte equals v" into a condition; false if
// the two contradict.
func andByte(val, mask *byte, v, m byte) bool {
	if (*val^v)&m&*mask != 0 {
		return false
	}
	*val |= v & m
	*mask |= m
	return true
}

func (k *keyBuf) match() rule.Match {
	var m rule.Match
	*(*[keySize]byte)(unsafe.Pointer(&m.Key)) = k.val
	*(*[keySize]byte)(unsafe.Pointer(&m.Mask)) = k.mask
	return m
}

// hdrBytes collects conditions on one header's bytes, by offset.
type hdrBytes map[int]*[2]byte // offset -> value, mask

func (h hdrBytes) and(off int, v, m byte) bool {
	b := h[off]
	if b == nil {
		b = &[2]byte{}
		h[off] = b
	}
	return andByte(&b[0], &b[1], v, m)
}

// combo is one choice from every predicate: a conjunction of byte
// conditions, by where they come from.
type combo struct {
	ll, nh, th hdrBytes
	proto      [2][2]byte // meta protocol: value, mask per byte
	l4         [2]byte    // meta l4proto: value, mask
	owner      map[string]int
}

// errUnsupported names the predicate a combination cannot be keyed on.
type errUnsupported struct {
	pred int
	why  string
}

func (e *errUnsupported) Error() string { return e.why }

// unsupported blames the predicate that put a condition on src byte off.
func (cb *combo) unsupported(src string, off int, why string) error {
	return &errUnsupported{pred: cb.owner[fmt.Sprintf("%s%d", src, off)], why: why}
}

// build turns one combination into masked keys (one per VLAN variant).
// noTH leaves transport conditions out and keys fragments instead (the
// punt that goes with a rule matching transport fields).
func (cb *combo) build(noTH bool) ([]rule.Match, error) {
	fail := cb.unsupported
	for off := range cb.ll {
		if off >= 22 {
			return nil, fail("ll", off, fmt.Sprintf("link-layer byte %d", off))
		}
	}
	th := cb.th
	if noTH {
		th = hdrBytes{}
	}
	usesTag := false
	for off := 14; off < 22; off++ {
		if b := cb.ll[off]; b != nil && b[1] != 0 {
			usesTag = true
		}
	}
	needE := cb.proto[0][1]|cb.proto[1][1] != 0 || len(cb.nh) > 0 || len(th) > 0 || cb.l4[1] != 0 || noTH
	var out []rule.Match
	llPut := func(k *keyBuf, off, keyOff int) bool {
		if b := cb.ll[off]; b != nil {
			return k.put(keyOff, b[0], b[1])
		}
		return true
	}
	var base keyBuf
	for i := 0; i < 6; i++ {
		if !llPut(&base, i, offEthDst+i) || !llPut(&base, 6+i, offEthSrc+i) {
			return nil, nil
		}
	}
	if !needE && !usesTag {
		k := base
		if !llPut(&k, 12, offEthType) || !llPut(&k, 13, offEthType+1) {
			return nil, nil
		}
		return []rule.Match{k.match()}, nil
	}
	for _, tpid := range []uint16{0, rule.EthP8021Q, rule.EthP8021AD} {
		k := base
		var eOff int // key offset of the effective ethertype
		if tpid == 0 {
			if usesTag {
				continue
			}
			// The kernel takes an outer tag off before the hook
			// (skb_vlan_untag): meta protocol is a TPID only past
			// one tag, never for a frame that starts with one.
			if p := uint16(cb.proto[0][0])<<8 | uint16(cb.proto[1][0]); cb.proto[0][1] == 0xff && cb.proto[1][1] == 0xff &&
				(p == rule.EthP8021Q || p == rule.EthP8021AD) {
				continue
			}
			eOff = offEthType
			if !llPut(&k, 12, eOff) || !llPut(&k, 13, eOff+1) {
				continue
			}
		} else {
			if !k.put(offEthType, byte(tpid>>8), 0xff) || !k.put(offEthType+1, byte(tpid), 0xff) ||
				!llPut(&k, 12, offEthType) || !llPut(&k, 13, offEthType+1) {
				continue
			}
			eOff = offEthType + 2
			if !llPut(&k, 14, offVlanTCI) || !llPut(&k, 15, offVlanTCI+1) ||
				!llPut(&k, 16, eOff) || !llPut(&k, 17, eOff+1) ||
				!llPut(&k, 18, offVlanTCI+2) || !llPut(&k, 19, offVlanTCI+3) ||
				!llPut(&k, 20, offEthType+4) || !llPut(&k, 21, offEthType+5) {
				continue
			}
		}
		if !k.put(eOff, cb.proto[0][0], cb.proto[0][1]) || !k.put(eOff+1, cb.proto[1][0], cb.proto[1][1]) {
			continue
		}
		if !needE {
			out = append(out, k.match())
			continue
		}
		// The effective ethertype decides what the network header is.
		var es []uint16
		switch {
		case k.mask[eOff] == 0xff && k.mask[eOff+1] == 0xff:
			es = []uint16{uint16(k.val[eOff])<<8 | uint16(k.val[eOff+1])}
		case k.mask[eOff] == 0 && k.mask[eOff+1] == 0 && len(cb.nh) == 0:
			es = []uint16{rule.EthPIP, rule.EthPIPv6} // l4proto or transport only: IP of either version
		default:
			return nil, fail("proto", 0, "a network-header match without the protocol")
		}
		if tpid != 0 && len(es) == 1 && (es[0] == rule.EthP8021Q || es[0] == rule.EthP8021AD) && (len(cb.nh) > 0 || len(th) > 0) {
			return nil, fail("proto", 0, "network header of a double-tagged frame")
		}
		if tpid != 0 && len(es) == 1 && es[0] != rule.EthP8021Q && es[0] != rule.EthP8021AD {
			for off := 18; off < 22; off++ {
				if b := cb.ll[off]; b != nil && b[1] != 0 {
					return nil, fail("ll", off, "link-layer bytes past a single VLAN tag")
				}
			}
		}
		for _, e := range es {
			kk := k
			if !kk.put(eOff, byte(e>>8), 0xff) || !kk.put(eOff+1, byte(e), 0xff) {
				continue
			}
			ok, err := cb.network(&kk, e, th, noTH)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, kk.match())
			}
		}
	}
	return out, nil
}

// network keys the network and transport conditions for ethertype e.
func (cb *combo) network(k *keyBuf, e uint16, th hdrBytes, frag bool) (bool, error) {
	fail := cb.unsupported
	if cb.l4[1] != 0 || len(th) > 0 || frag {
		if e != rule.EthPIP && e != rule.EthPIPv6 {
			if cb.l4[1] != 0 {
				return false, fail("l4", 0, "meta l4proto of a non-IP protocol")
			}
			if frag {
				return false, nil
			}
			return false, fail("th", 0, "transport header of a non-IP protocol")
		}
		if !k.put(offIPProto, cb.l4[0], cb.l4[1]) {
			return false, nil
		}
	}
	for off, b := range cb.nh {
		var keyOff int
		switch {
		case e == rule.EthPIP && off == 1:
			keyOff = offIPTos
		case e == rule.EthPIP && off == 8:
			keyOff = offIPTTL
		case e == rule.EthPIP && off == 9:
			keyOff = offIPProto
		case e == rule.EthPIP && off >= 12 && off < 16:
			keyOff = offSrcIP + off - 12
		case e == rule.EthPIP && off >= 16 && off < 20:
			keyOff = offDstIP + off - 16
		case e == rule.EthPIPv6 && off == 7:
			keyOff = offIPTTL
		case e == rule.EthPIPv6 && off >= 8 && off < 24:
			keyOff = offSrcIP + off - 8
		case e == rule.EthPIPv6 && off >= 24 && off < 40:
			keyOff = offDstIP + off - 24
		default:
			return false, fail("nh", off, fmt.Sprintf("network-header byte %d of ethertype %#04x", off, e))
		}
		if !k.put(keyOff, b[0], b[1]) {
			return false, nil
		}
	}
	if frag {
		// Fragments: nft reads the bytes after the IP header as the
		// transport header of every fragment, first or not (seen on 6.18,
		// fast and slow payload paths alike); xdpflow's key carries no
		// transport fields for fragments, like flower. They go to the
		// kernel.
		return k.put(offIPFrag, rule.FragIsFragment, rule.FragIsFragment), nil
	}
	if len(th) == 0 {
		return true, nil
	}
	if k.mask[offIPProto] != 0xff {
		return false, fail("th", 0, "transport header without the protocol")
	}
	proto := k.val[offIPProto]
	// Fragments carry no transport key: a rule matching transport fields
	// never matches one in XDP; the companion part punts them.
	if !k.put(offIPFrag, 0, rule.FragIsFragment) {
		return false, nil
	}
	for off, b := range th {
		var keyOff int
		m := b[1]
		switch {
		case (proto == 6 || proto == 17 || proto == 132) && off < 4:
			keyOff = offSrcPort + off
		case proto == 6 && off == 12:
			if m&0xf0 != 0 {
				return false, fail("th", off, "tcp data offset")
			}
			keyOff = offTCPFlags
		case proto == 6 && off == 13:
			keyOff = offTCPFlags + 1
		case ((proto == 1 && e == rule.EthPIP) || (proto == 58 && e == rule.EthPIPv6)) && off == 0:
			keyOff = offICMPType
		case ((proto == 1 && e == rule.EthPIP) || (proto == 58 && e == rule.EthPIPv6)) && off == 1:
			keyOff = offICMPCode
		default:
			return false, fail("th", off, fmt.Sprintf("transport-header byte %d of protocol %d", off, proto))
		}
		if !k.put(keyOff, b[0], m) {
			return false, nil
		}
	}
	return true, nil
}

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
		cb := &combo{ll: hdrBytes{}, nh: hdrBytes{}, th: hdrBytes{}, owner: map[string]int{}}
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

// add ANDs one field's condition into the combination; false if it
// contradicts what is there.
func (cb *combo) add(pi int, f field, c bytesCmp) bool {
	switch f.kind {
	case fMetaProto:
		cb.owner["proto0"] = pi
		return andByte(&cb.proto[0][0], &cb.proto[0][1], c.val[0], c.mask[0]) &&
			andByte(&cb.proto[1][0], &cb.proto[1][1], c.val[1], c.mask[1])
	case fMetaL4Proto:
		cb.owner["l40"] = pi
		return andByte(&cb.l4[0], &cb.l4[1], c.val[0], c.mask[0])
	}
	var h hdrBytes
	src := ""
	switch f.base {
	case expr.PayloadBaseLLHeader:
		h, src = cb.ll, "ll"
	case expr.PayloadBaseNetworkHeader:
		h, src = cb.nh, "nh"
	default:
		h, src = cb.th, "th"
	}
	for i := 0; i < int(f.len); i++ {
		if c.mask[i] == 0 {
			continue
		}
		off := int(f.off) + i
		cb.owner[fmt.Sprintf("%s%d", src, off)] = pi
		if src == "th" {
			cb.owner["th0"] = pi
		}
		if src == "nh" {
			cb.owner["proto0"] = pi
		}
		if !h.and(off, c.val[i], c.mask[i]) {
			return false
		}
	}
	return true
}

func ifName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return ifi.Name
	}
	return fmt.Sprintf("if%d", ifindex)
}
