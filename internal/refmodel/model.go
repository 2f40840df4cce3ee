// Package refmodel is a pure-Go reference model of the xdpflow classifier,
// written from the kernel's code rather than from the datapath's: how the
// receive path, cls_flower's flow dissector and nft's netdev ingress read a
// frame (receive.go, dissect.go, nftinfo.go), which frames one xdpflow key
// cannot stand for (parse.go, limits.go), fl_classify's first match over
// rules, not over the datapath's expanded entries (lookup.go, table.go),
// and the actions (actions.go). Tests run the real XDP program and this
// model on the same packets and compare.
package refmodel

import "github.com/xdpflow/xdpflow/rule"

// Verdict is what happens to a packet.
type Verdict int

const (
	Pass Verdict = iota
	Drop
	TX
	Redirect
)

func (v Verdict) String() string {
	return [...]string{"pass", "drop", "tx", "redirect"}[v]
}

// Result is the model's outcome for one packet.
type Result struct {
	Verdict Verdict
	Ifindex int    // Redirect target
	Frame   []byte // the frame as it leaves (actions applied)
	Rule    int    // index of the matching rule, -1 for none
	Bytes   int    // what the rule's byte counter grows by
}

// Run classifies frame against rules, which must be in lookup order
// (see Table), and applies the first match's actions.
func Run(rules []*rule.Rule, frame []byte, ifindex uint32) Result {
	out := append([]byte(nil), frame...)
	k, l2len, ok := Parse(frame, ifindex)
	if !ok {
		return Result{Verdict: Pass, Frame: out, Rule: -1}
	}
	i := classify(rules, &k)
	if i < 0 {
		return Result{Verdict: Pass, Frame: out, Rule: -1}
	}
	res := Result{Rule: i, Bytes: len(frame) - l2len}
	res.Verdict, res.Ifindex, res.Frame = apply(rules[i], out)
	return res
}
