package nft

import (
	"fmt"

	"github.com/google/nftables/expr"

	"github.com/xdpflow/xdpflow/rule"
)

// combo is one choice from every predicate: a conjunction of byte
// conditions, by where they come from.
type combo struct {
	ll, nh, th hdrBytes
	proto      [2][2]byte // meta protocol: value, mask per byte
	l4         [2]byte    // meta l4proto: value, mask
	owner      map[string]int
	// readsTH: the rule loads transport header bytes, even where every
	// value passes (th then holds no condition): nft's load still fails
	// on a fragment too short for them, so no fragment is the rule's.
	readsTH bool
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
	for off := range cb.ll {
		if off >= 22 {
			return nil, cb.unsupported("ll", off, fmt.Sprintf("link-layer byte %d", off))
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
	needE := cb.proto[0][1]|cb.proto[1][1] != 0 || len(cb.nh) > 0 || len(th) > 0 || cb.l4[1] != 0 || noTH || cb.readsTH
	var base keyBuf
	for i := 0; i < 6; i++ {
		if !cb.llPut(&base, i, offEthDst+i) || !cb.llPut(&base, 6+i, offEthSrc+i) {
			return nil, nil
		}
	}
	if !needE && !usesTag {
		k := base
		if !cb.llPut(&k, 12, offEthType) || !cb.llPut(&k, 13, offEthType+1) {
			return nil, nil
		}
		return []rule.Match{k.match()}, nil
	}
	if !usesTag && !cb.readsTypeBytes() {
		return cb.byProtocol(base, th, noTH)
	}
	var out []rule.Match
	for _, tpid := range []uint16{0, rule.EthP8021Q, rule.EthP8021AD} {
		k, eOff, ok := cb.frame(base, tpid, usesTag)
		if !ok {
			continue
		}
		if !needE {
			out = append(out, k.match())
			continue
		}
		es, err := cb.ethertypes(&k, eOff, tpid, th)
		if err != nil {
			return nil, err
		}
		if out, err = cb.perEthertype(out, k, eOff, es, th, noTH); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// perEthertype appends k keyed for each ethertype of es at key offset eOff,
// with the network and transport conditions of that ethertype.
func (cb *combo) perEthertype(out []rule.Match, k keyBuf, eOff int, es []uint16, th hdrBytes, noTH bool) ([]rule.Match, error) {
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
	return out, nil
}

// readsTypeBytes reports whether the combination reads the link-layer
// bytes past the MACs (ether type, a tag's bytes), which differ between a
// frame with an outer tag and one without.
func (cb *combo) readsTypeBytes() bool {
	for off, b := range cb.ll {
		if off >= 12 && b[1] != 0 {
			return true
		}
	}
	return false
}

// byProtocol keys a combination that reads nothing of the link layer past
// the MACs by the ethertype the hooks see (Key.L3Proto, skb->protocol
// once the kernel has taken an outer tag off): one match for frames with
// and without an outer tag, where keying the frame would take one for
// each (see frame).
func (cb *combo) byProtocol(base keyBuf, th hdrBytes, noTH bool) ([]rule.Match, error) {
	k := base
	if !k.put(offL3Proto, cb.proto[0][0], cb.proto[0][1]) || !k.put(offL3Proto+1, cb.proto[1][0], cb.proto[1][1]) {
		return nil, nil
	}
	es, err := cb.ethertypes(&k, offL3Proto, 0, th)
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if (e == rule.EthP8021Q || e == rule.EthP8021AD) && (len(cb.nh) > 0 || len(th) > 0) {
			// skb->protocol is a TPID only for a frame with a second tag.
			return nil, cb.unsupported("proto", 0, "network header of a double-tagged frame")
		}
	}
	return cb.perEthertype(nil, k, offL3Proto, es, th, noTH)
}

// llPut ANDs the condition on link-layer byte off into key byte keyOff.
func (cb *combo) llPut(k *keyBuf, off, keyOff int) bool {
	if b := cb.ll[off]; b != nil {
		return k.put(keyOff, b[0], b[1])
	}
	return true
}

// frame keys base for a frame with outer tag tpid (0: untagged) and
// returns the key offset of the effective ethertype (what meta protocol
// reads); false when no such frame matches.
func (cb *combo) frame(base keyBuf, tpid uint16, usesTag bool) (keyBuf, int, bool) {
	k := base
	var eOff int
	if tpid == 0 {
		if usesTag {
			return k, 0, false
		}
		// The kernel takes an outer tag off before the hook
		// (skb_vlan_untag): meta protocol is a TPID only past
		// one tag, never for a frame that starts with one.
		if p := uint16(cb.proto[0][0])<<8 | uint16(cb.proto[1][0]); cb.proto[0][1] == 0xff && cb.proto[1][1] == 0xff &&
			(p == rule.EthP8021Q || p == rule.EthP8021AD) {
			return k, 0, false
		}
		eOff = offEthType
		if !cb.llPut(&k, 12, eOff) || !cb.llPut(&k, 13, eOff+1) {
			return k, 0, false
		}
	} else {
		if !k.put(offEthType, byte(tpid>>8), 0xff) || !k.put(offEthType+1, byte(tpid), 0xff) ||
			!cb.llPut(&k, 12, offEthType) || !cb.llPut(&k, 13, offEthType+1) {
			return k, 0, false
		}
		eOff = offEthType + 2
		if !cb.llPut(&k, 14, offVlanTCI) || !cb.llPut(&k, 15, offVlanTCI+1) ||
			!cb.llPut(&k, 16, eOff) || !cb.llPut(&k, 17, eOff+1) ||
			!cb.llPut(&k, 18, offVlanTCI+2) || !cb.llPut(&k, 19, offVlanTCI+3) ||
			!cb.llPut(&k, 20, offEthType+4) || !cb.llPut(&k, 21, offEthType+5) {
			return k, 0, false
		}
	}
	if !k.put(eOff, cb.proto[0][0], cb.proto[0][1]) || !k.put(eOff+1, cb.proto[1][0], cb.proto[1][1]) {
		return k, 0, false
	}
	return k, eOff, true
}

// ethertypes are the effective ethertypes a frame keyed as k can have,
// which decide what its network header is.
func (cb *combo) ethertypes(k *keyBuf, eOff int, tpid uint16, th hdrBytes) ([]uint16, error) {
	fail := cb.unsupported
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
	return es, nil
}

// network keys the network and transport conditions for ethertype e.
func (cb *combo) network(k *keyBuf, e uint16, th hdrBytes, frag bool) (bool, error) {
	fail := cb.unsupported
	if cb.l4[1] != 0 || len(th) > 0 || frag || cb.readsTH {
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
		keyOff, ok := networkKeyOffset(e, off)
		if !ok {
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
	if len(th) == 0 && !cb.readsTH {
		return true, nil
	}
	return cb.transport(k, e, th)
}

// networkKeyOffset is the key byte network-header byte off of ethertype
// e goes to; false for a byte the key does not have.
func networkKeyOffset(e uint16, off int) (int, bool) {
	switch {
	case e == rule.EthPIP && off == 1:
		return offIPTos, true
	case e == rule.EthPIP && off == 8:
		return offIPTTL, true
	case e == rule.EthPIP && off == 9:
		return offIPProto, true
	case e == rule.EthPIP && off >= 12 && off < 16:
		return offSrcIP + off - 12, true
	case e == rule.EthPIP && off >= 16 && off < 20:
		return offDstIP + off - 16, true
	case e == rule.EthPIPv6 && off == 7:
		return offIPTTL, true
	case e == rule.EthPIPv6 && off >= 8 && off < 24:
		return offSrcIP + off - 8, true
	case e == rule.EthPIPv6 && off >= 24 && off < 40:
		return offDstIP + off - 24, true
	}
	return 0, false
}

// transport keys the transport-header conditions th for ethertype e.
func (cb *combo) transport(k *keyBuf, e uint16, th hdrBytes) (bool, error) {
	fail := cb.unsupported
	if k.mask[offIPProto] != 0xff {
		return false, fail("th", 0, "transport header without the protocol")
	}
	proto := k.val[offIPProto]
	// Fragments carry no transport key: a rule matching transport fields
	// never matches one in XDP; the companion part punts them.
	if !k.put(offIPFrag, 0, rule.FragIsFragment) {
		return false, nil
	}
	icmp := (proto == 1 && e == rule.EthPIP) || (proto == 58 && e == rule.EthPIPv6)
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
		case icmp && off == 0:
			keyOff = offICMPType
		case icmp && off == 1:
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
