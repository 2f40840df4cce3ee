package flower

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/mdlayher/netlink"

	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// controlWord is tc's word for an action's control value.
func controlWord(c int32) (string, error) {
	switch uint32(c) & tcActOpcodeMask {
	case tcActGotoChain:
		return "", ruletext.Unsupported("goto chain %d (chains are not run in XDP)", uint32(c)&^tcActOpcodeMask)
	case tcActJump:
		return "", ruletext.Unsupported("action jump")
	}
	switch c {
	case tcActOK:
		return "pass", nil
	case tcActShot:
		return "drop", nil
	case tcActPipe:
		return "pipe", nil
	case tcActStolen:
		return "stolen", nil
	case tcActReclassify:
		return "reclassify", nil
	case tcActTrap:
		return "trap", nil
	case -1:
		return "continue", nil
	}
	return "", ruletext.Unsupported("action control %d", c)
}

// decodeActions turns TCA_FLOWER_ACT into "action ..." words.
func (d *flowerDecoder) decodeActions(b []byte) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	d.redirectIfindex = map[int]int{}
	first := true
	for ad.Next() {
		// Each action is nested under its order (1, 2, ...); the kernel
		// dumps them in order.
		var kind string
		var opts []byte
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			for nad.Next() {
				switch nad.Type() {
				case tcaActKind:
					kind = nad.String()
				case tcaActOptions:
					opts = nad.Bytes()
				case tcaActStats:
					if first {
						nad.Nested(d.stats)
					}
				}
			}
			return nil
		})
		first = false
		if d.actionErr != nil {
			continue
		}
		words, ifindex, err := d.action(kind, opts)
		if err != nil {
			d.actionErr = err
			continue
		}
		if ifindex != 0 {
			// The redirect's place in the parsed list: the actions parsed so far.
			acts, perr := ruletext.ParseActions(d.actions)
			if perr != nil {
				d.actionErr = perr
				continue
			}
			d.redirectIfindex[len(acts)] = ifindex
		}
		d.actions = append(d.actions, append([]string{"action"}, words...)...)
	}
	return ad.Err()
}

// stats reads an action's TCA_ACT_STATS: the filter's counters are its
// first action's.
func (d *flowerDecoder) stats(sad *netlink.AttributeDecoder) error {
	for sad.Next() {
		sb := sad.Bytes()
		switch {
		case sad.Type() == tcaStatsBasic && len(sb) >= 12:
			d.bytes = binary.NativeEndian.Uint64(sb)
			if d.packets == 0 {
				d.packets = uint64(binary.NativeEndian.Uint32(sb[8:]))
			}
		case sad.Type() == tcaStatsPkt64 && len(sb) == 8:
			d.packets = binary.NativeEndian.Uint64(sb)
		}
	}
	return nil
}

// action renders one action in tc's words, with the ifindex of a
// redirect out of a device (0 for any other action).
func (d *flowerDecoder) action(kind string, opts []byte) (words []string, redirIfindex int, err error) {
	params := map[uint16][]byte{}
	if opts != nil {
		ad, err := netlink.NewAttributeDecoder(opts)
		if err != nil {
			return nil, 0, err
		}
		for ad.Next() {
			params[ad.Type()] = ad.Bytes()
		}
	}
	// Every kind's parameters start with tc_gen: index, capab, action, ...
	control := func(p []byte) (string, error) {
		if len(p) < 12 {
			return "", fmt.Errorf("action %s: short parameters", kind)
		}
		return controlWord(int32(binary.NativeEndian.Uint32(p[8:])))
	}
	switch kind {
	case "gact":
		if params[tcaGactProb] != nil {
			return nil, 0, ruletext.Unsupported("action gact random")
		}
		w, err := control(params[tcaGactParms])
		if err != nil {
			return nil, 0, err
		}
		return []string{w}, 0, nil
	case "mirred":
		return d.decodeMirred(params, control)
	case "vlan":
		w, err := decodeVlan(params, control)
		return w, 0, err
	case "pedit":
		w, err := decodePedit(params, control)
		return w, 0, err
	case "skbmod":
		w, err := decodeSkbmod(params, control)
		return w, 0, err
	}
	return nil, 0, ruletext.Unsupported("action %q", kind)
}

// decodeMirred renders an act_mirred, and the ifindex it redirects out of
// when it is an egress redirect (the one kind XDP runs).
func (d *flowerDecoder) decodeMirred(params map[uint16][]byte, control func([]byte) (string, error)) ([]string, int, error) {
	p := params[tcaMirredParms]
	if len(p) < 28 {
		return nil, 0, errors.New("action mirred: short parameters")
	}
	ctl, err := control(p)
	if err != nil {
		return nil, 0, err
	}
	eaction := int32(binary.NativeEndian.Uint32(p[20:]))
	ifindex := int(binary.NativeEndian.Uint32(p[24:]))
	name, err := d.ifname(ifindex)
	if err != nil {
		return nil, 0, fmt.Errorf("action mirred: target ifindex %d: %w", ifindex, err)
	}
	var dir, mode string
	switch eaction {
	case tcEgressRedir:
		dir, mode = "egress", "redirect"
	case tcEgressMirror:
		dir, mode = "egress", "mirror"
	case tcIngressRedir:
		dir, mode = "ingress", "redirect"
	case tcIngressMirr:
		dir, mode = "ingress", "mirror"
	default:
		return nil, 0, ruletext.Unsupported("action mirred mode %d", eaction)
	}
	words := []string{"mirred", dir, mode, "dev", name, ctl}
	if eaction != tcEgressRedir {
		ifindex = 0
	}
	return words, ifindex, nil
}

// decodeVlan renders an act_vlan: pop, or push and modify with the tag's
// id, protocol and priority as given.
func decodeVlan(params map[uint16][]byte, control func([]byte) (string, error)) ([]string, error) {
	p := params[tcaVlanParms]
	if len(p) < 24 {
		return nil, errors.New("action vlan: short parameters")
	}
	ctl, err := control(p)
	if err != nil {
		return nil, err
	}
	w := []string{"vlan"}
	switch mode := binary.NativeEndian.Uint32(p[20:]); mode {
	case tcVlanPop:
		w = append(w, "pop")
	case tcVlanPush, tcVlanModify:
		if mode == tcVlanPush {
			w = append(w, "push")
		} else {
			w = append(w, "modify")
		}
		if v := params[tcaVlanID]; len(v) == 2 {
			w = append(w, "id", strconv.Itoa(int(binary.NativeEndian.Uint16(v))))
		}
		if v := params[tcaVlanProto]; len(v) == 2 {
			w = append(w, "protocol", fmt.Sprintf("0x%04x", binary.BigEndian.Uint16(v)))
		}
		if v := params[tcaVlanPrio]; len(v) == 1 {
			w = append(w, "priority", strconv.Itoa(int(v[0])))
		}
	case tcVlanPopEth:
		return nil, ruletext.Unsupported("action vlan pop_eth")
	case tcVlanPushEth:
		return nil, ruletext.Unsupported("action vlan push_eth")
	default:
		return nil, ruletext.Unsupported("action vlan mode %d", mode)
	}
	return append(w, ctl), nil
}
