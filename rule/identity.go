package rule

import (
	"encoding/binary"
	"unsafe"
)

// Identity is a rule's identity: where it comes from and sits in the lookup
// (source, chain, pref, handle, part name) and what it does (its matches,
// actions and flags, or the digest an nft rule is known by). Two rules
// with equal identities put the same entries in the same place; a rule whose identity
// is installed already need not be installed again. It is a value, made
// without formatting the rule's text, so tables and mirrors compare and
// index rules by it.
type Identity struct {
	Source Source
	Chain  uint32
	Prio   uint16
	Level  uint32
	Handle uint32
	Name   string
	body   string
}

// Identity is r's identity. A rule with a Digest (nft's, fresh or reopened from
// its spec) is known by it; any other by its content.
func (r *Rule) Identity() Identity {
	id := Identity{Source: r.Source, Chain: r.Chain, Prio: r.Prio, Level: r.Level, Handle: r.Handle, Name: r.Name}
	if r.Digest != "" {
		id.body = "digest " + r.Digest
		return id
	}
	id.body = string(r.appendContent(make([]byte, 0, 2*keySize+64)))
	return id
}

const keySize = int(unsafe.Sizeof(Key{}))

// appendContent encodes what r does to packets: the fields a rule's text
// says, except the keys as written, whose matches it encodes instead.
func (r *Rule) appendContent(b []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, r.Protocol)
	b = append(b, boolByte(r.SkipHW)|boolByte(r.SkipSW)<<1)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Keepalive))
	b = binary.AppendUvarint(b, uint64(len(r.More)))
	b = appendMatch(b, &r.Match)
	for i := range r.More {
		b = appendMatch(b, &r.More[i])
	}
	b = binary.AppendUvarint(b, uint64(len(r.Actions)))
	for _, a := range r.Actions {
		b = append(b, byte(a.Kind), a.VlanPrio, boolByte(a.HasPrio))
		b = binary.LittleEndian.AppendUint16(b, a.VlanID)
		b = binary.LittleEndian.AppendUint16(b, a.VlanProto)
		b = appendString(b, a.Dev)
		b = appendString(b, string(a.MAC))
	}
	return b
}

func appendMatch(b []byte, m *Match) []byte {
	k := MaskKey(&m.Key, &m.Mask)
	b = append(b, (*[keySize]byte)(unsafe.Pointer(&k))[:]...)
	b = append(b, (*[keySize]byte)(unsafe.Pointer(&m.Mask))[:]...)
	for _, v := range []uint16{m.SrcPortRange.Min, m.SrcPortRange.Max, m.DstPortRange.Min, m.DstPortRange.Max} {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	for _, p := range []Prefix4{m.SrcAddrs, m.DstAddrs} {
		b = append(binary.LittleEndian.AppendUint32(b, p.Addr), p.Bits)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
