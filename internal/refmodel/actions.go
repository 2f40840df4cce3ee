package refmodel

import (
	"encoding/binary"

	"github.com/xdpflow/xdpflow/rule"
)

// apply runs r's actions on frame f: the verdict, the redirect target and
// the frame as it leaves.
func apply(r *rule.Rule, f []byte) (Verdict, int, []byte) {
	for _, a := range r.Actions {
		switch a.Kind {
		case rule.ActDrop:
			return Drop, 0, f
		case rule.ActPass:
			return Pass, 0, f
		case rule.ActRedirect:
			if a.Dev == r.Dev {
				return TX, 0, f
			}
			return Redirect, a.Ifindex, f
		case rule.ActVlanPush:
			tag := make([]byte, 4)
			binary.BigEndian.PutUint16(tag, a.VlanProto)
			binary.BigEndian.PutUint16(tag[2:], a.VlanID&0x0FFF|uint16(a.VlanPrio&7)<<13)
			f = append(f[:12:12], append(tag, f[12:]...)...)
		case rule.ActVlanPop:
			if len(f) >= 18 && ethTypeVLAN(binary.BigEndian.Uint16(f[12:])) {
				f = append(f[:12:12], f[16:]...)
			}
		case rule.ActVlanModify:
			if len(f) >= 16 && ethTypeVLAN(binary.BigEndian.Uint16(f[12:])) {
				tci := binary.BigEndian.Uint16(f[14:])
				tci = tci&^0x0FFF | a.VlanID&0x0FFF
				if a.HasPrio {
					tci = tci&0x1FFF | uint16(a.VlanPrio&7)<<13
				}
				binary.BigEndian.PutUint16(f[12:], a.VlanProto)
				binary.BigEndian.PutUint16(f[14:], tci)
			}
		case rule.ActSetEthDst:
			copy(f[0:6], a.MAC)
		case rule.ActSetEthSrc:
			copy(f[6:12], a.MAC)
		}
	}
	return Pass, 0, f
}
