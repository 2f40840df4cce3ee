package flower

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// TCMsgLen is the size of struct tcmsg.
const TCMsgLen = 20

// IngressParent is TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS): the parent of
// ingress filters, under clsact or the ingress qdisc.
const IngressParent = 0xFFFFFFF2

// TCMsg is struct tcmsg.
type TCMsg struct {
	Ifindex int32
	Handle  uint32
	Parent  uint32
	Info    uint32 // filters: prio<<16 | protocol (network order)
}

// ParseTCMsg reads the header of an rtnetlink TC message.
func ParseTCMsg(b []byte) (TCMsg, []byte, error) {
	if len(b) < TCMsgLen {
		return TCMsg{}, nil, errors.New("tc message too short")
	}
	ne := binary.NativeEndian
	return TCMsg{Ifindex: int32(ne.Uint32(b[4:])), Handle: ne.Uint32(b[8:]), Parent: ne.Uint32(b[12:]),
		Info: ne.Uint32(b[16:])}, b[TCMsgLen:], nil
}

// Marshal encodes the header.
func (m TCMsg) Marshal() []byte {
	b := make([]byte, TCMsgLen)
	ne := binary.NativeEndian
	b[0] = unix.AF_UNSPEC
	ne.PutUint32(b[4:], uint32(m.Ifindex))
	ne.PutUint32(b[8:], m.Handle)
	ne.PutUint32(b[12:], m.Parent)
	ne.PutUint32(b[16:], m.Info)
	return b
}

// Filter flags (TCA_CLS_FLAGS_*).
const (
	FlagSkipHW  = 1 << 0
	FlagSkipSW  = 1 << 1
	FlagInHW    = 1 << 2
	FlagNotInHW = 1 << 3
)
