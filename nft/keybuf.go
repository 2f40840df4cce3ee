package nft

import (
	"unsafe"

	"github.com/xdpflow/xdpflow/rule"
)

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
	offL3Proto  = int(unsafe.Offsetof(rule.Key{}.L3Proto))
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
