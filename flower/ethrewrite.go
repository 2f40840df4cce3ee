package flower

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/mdlayher/netlink"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// Ethernet address rewrites in TC: act_pedit ("pedit ex munge eth dst|src
// set MAC", what Open vSwitch installs for set_field of eth_dst/eth_src)
// and act_skbmod ("skbmod set dmac|smac MAC"). Only whole-address sets are
// understood; any other edit is left to TC.

// act_pedit and act_skbmod attributes (include/uapi/linux/tc_act/).
const (
	tcaPeditParmsEx    = 4
	tcaPeditKeysEx     = 5
	tcaPeditKeyEx      = 6
	tcaPeditKeyExHtype = 1
	tcaPeditKeyExCmd   = 2
	peditHtypeEth      = 1
	peditCmdSet        = 0

	tcaSkbmodParms = 2
	tcaSkbmodDmac  = 3
	tcaSkbmodSmac  = 4
	skbmodFDmac    = 0x1
	skbmodFSmac    = 0x2

	tcGenLen       = 20 // struct tc_gen
	peditKeysStart = 24 // struct tc_pedit_sel: tc_gen, nkeys, flags, keys (4-aligned)
	peditKeyLen    = 24 // struct tc_pedit_key: mask, val, off, at, offmask, shift
)

// decodePedit renders an act_pedit that sets whole Ethernet addresses in
// flower's words: "pedit ex munge eth dst set MAC [munge eth src set MAC]".
// A key sets packet bytes off..off+3 to (old & mask) ^ val; mask and val
// are stored as the packet's own byte order, so byte i of each belongs to
// packet byte off+i.
func decodePedit(params map[uint16][]byte, control func([]byte) (string, error)) ([]string, error) {
	p := params[tcaPeditParmsEx]
	if len(p) < peditKeysStart {
		return nil, ruletext.Unsupported("action pedit without extended keys")
	}
	ctl, err := control(p)
	if err != nil {
		return nil, err
	}
	nkeys := int(p[tcGenLen])
	if len(p) < peditKeysStart+nkeys*peditKeyLen {
		return nil, errors.New("action pedit: short keys")
	}
	kinds, err := peditKeyKinds(params[tcaPeditKeysEx])
	if err != nil {
		return nil, err
	}
	if len(kinds) != nkeys {
		return nil, ruletext.Unsupported("action pedit with %d keys and %d extended keys", nkeys, len(kinds))
	}
	var set [12]bool
	var val [12]byte
	for k := 0; k < nkeys; k++ {
		key := p[peditKeysStart+k*peditKeyLen:]
		mask, v := key[0:4], key[4:8]
		off := binary.NativeEndian.Uint32(key[8:])
		at, offmask, shift := binary.NativeEndian.Uint32(key[12:]), binary.NativeEndian.Uint32(key[16:]),
			binary.NativeEndian.Uint32(key[20:])
		if kinds[k] != [2]uint16{peditHtypeEth, peditCmdSet} || at != 0 || offmask != 0 || shift != 0 || off%4 != 0 || off > 8 {
			return nil, ruletext.Unsupported("action pedit: edits other than setting Ethernet addresses")
		}
		for i := 0; i < 4; i++ {
			switch mask[i] {
			case 0xFF:
				if v[i] != 0 {
					return nil, ruletext.Unsupported("action pedit: a bit-level edit")
				}
			case 0x00:
				set[int(off)+i], val[int(off)+i] = true, v[i]
			default:
				return nil, ruletext.Unsupported("action pedit: a bit-level edit")
			}
		}
	}
	words := []string{"pedit", "ex"}
	for _, a := range []struct {
		name string
		at   int
	}{{"dst", 0}, {"src", 6}} {
		n := 0
		for i := a.at; i < a.at+6; i++ {
			if set[i] {
				n++
			}
		}
		switch n {
		case 0:
		case 6:
			words = append(words, "munge", "eth", a.name, "set", net.HardwareAddr(val[a.at:a.at+6]).String())
		default:
			return nil, ruletext.Unsupported("action pedit: part of the Ethernet %s address", a.name)
		}
	}
	if len(words) == 2 {
		return nil, ruletext.Unsupported("action pedit: no Ethernet address set")
	}
	return append(words, ctl), nil
}

// peditKeyKinds reads TCA_PEDIT_KEYS_EX: (htype, cmd) of each key.
func peditKeyKinds(b []byte) ([][2]uint16, error) {
	if b == nil {
		return nil, ruletext.Unsupported("action pedit without extended keys")
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	var out [][2]uint16
	for ad.Next() {
		if ad.Type() != tcaPeditKeyEx {
			continue
		}
		var k [2]uint16
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				switch nad.Type() {
				case tcaPeditKeyExHtype:
					k[0] = nad.Uint16()
				case tcaPeditKeyExCmd:
					k[1] = nad.Uint16()
				}
			}
			return nil
		})
		out = append(out, k)
	}
	return out, ad.Err()
}

// decodeSkbmod renders an act_skbmod that sets Ethernet addresses.
func decodeSkbmod(params map[uint16][]byte, control func([]byte) (string, error)) ([]string, error) {
	p := params[tcaSkbmodParms]
	if len(p) < 32 {
		return nil, errors.New("action skbmod: short parameters")
	}
	ctl, err := control(p)
	if err != nil {
		return nil, err
	}
	flags := binary.NativeEndian.Uint64(p[24:])
	if flags&^uint64(skbmodFDmac|skbmodFSmac) != 0 {
		return nil, ruletext.Unsupported("action skbmod other than set dmac/smac")
	}
	words := []string{"skbmod", "set"}
	for _, a := range []struct {
		flag uint64
		attr uint16
		name string
	}{{skbmodFDmac, tcaSkbmodDmac, "dmac"}, {skbmodFSmac, tcaSkbmodSmac, "smac"}} {
		if flags&a.flag == 0 {
			continue
		}
		mac := params[a.attr]
		if len(mac) != 6 {
			return nil, fmt.Errorf("action skbmod: %s missing", a.name)
		}
		words = append(words, a.name, net.HardwareAddr(mac).String())
	}
	if len(words) == 2 {
		return nil, ruletext.Unsupported("action skbmod: nothing set")
	}
	return append(words, ctl), nil
}

// encodePedit builds the options of an act_pedit that sets one Ethernet
// address (a rule.ActSetEthDst or ActSetEthSrc) and then pipes on: the two
// keys iproute2 writes for "pedit ex munge eth dst|src set MAC".
func encodePedit(a rule.Action, opts *netlink.AttributeEncoder) error {
	if len(a.MAC) != 6 {
		return fmt.Errorf("action pedit: MAC %q", a.MAC)
	}
	start := 0
	if a.Kind == rule.ActSetEthSrc {
		start = 6
	}
	// Bytes 0..11 as three 4-byte words; each key covers one word.
	var set [12]bool
	var val [12]byte
	for i := 0; i < 6; i++ {
		set[start+i], val[start+i] = true, a.MAC[i]
	}
	p := make([]byte, peditKeysStart)
	binary.NativeEndian.PutUint32(p[8:], uint32(tcActPipe))
	kex := netlink.NewAttributeEncoder()
	nkeys := 0
	for off := 0; off < 12; off += 4 {
		if !set[off] && !set[off+1] && !set[off+2] && !set[off+3] {
			continue
		}
		key := make([]byte, peditKeyLen)
		for i := 0; i < 4; i++ {
			if set[off+i] {
				key[4+i] = val[off+i] // mask byte 0: replaced
			} else {
				key[i] = 0xFF // kept
			}
		}
		binary.NativeEndian.PutUint32(key[8:], uint32(off))
		p = append(p, key...)
		kex.Nested(tcaPeditKeyEx, func(ne *netlink.AttributeEncoder) error {
			ne.Uint16(tcaPeditKeyExHtype, peditHtypeEth)
			ne.Uint16(tcaPeditKeyExCmd, peditCmdSet)
			return nil
		})
		nkeys++
	}
	p[tcGenLen] = byte(nkeys)
	opts.Bytes(tcaPeditParmsEx, p)
	kb, err := kex.Encode()
	if err != nil {
		return err
	}
	opts.Bytes(tcaPeditKeysEx|netlink.Nested, kb)
	return nil
}
