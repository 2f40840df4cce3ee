package refmodel

import "encoding/binary"

// Ethertypes and header sizes the kernel's receive path and dissector name
// (include/uapi/linux/if_ether.h, include/linux/if_vlan.h).
const (
	ethHLen    = 14     // ETH_HLEN
	vlanHLen   = 4      // VLAN_HLEN
	eth8023Min = 0x0600 // ETH_P_802_3_MIN
	ethPIP     = 0x0800
	ethPARP    = 0x0806
	ethPRARP   = 0x8035
	ethPIPv6   = 0x86DD
	ethP8021Q  = 0x8100
	ethP8021AD = 0x88A8
	ethPMPLSUC = 0x8847
	ethPMPLSMC = 0x8848
	ethPPPPSes = 0x8864
	ethPBatman = 0x4305
	ethPHSR    = 0x892F
	ethPPRP    = 0x88FB
)

// eth_type_vlan (include/linux/if_vlan.h): the TPIDs the receive path
// untags and the dissector walks.
func ethTypeVLAN(p uint16) bool { return p == ethP8021Q || p == ethP8021AD }

// skb is what the kernel's receive path makes of a frame by the time the
// ingress hooks run: eth_type_trans (net/ethernet/eth.c) pulls the
// Ethernet header and sets skb->protocol; __netif_receive_skb_core
// (net/core/dev.c) then takes one VLAN tag off with skb_vlan_untag
// (net/core/skbuff.c) before tc ingress (sch_handle_ingress) and
// netfilter's netdev ingress (nf_hook_ingress) see the packet.
type skb struct {
	frame []byte
	// protocol is skb->protocol; vlan, vlanProto and vlanTCI the tag
	// skb_vlan_untag moved into skb->vlan_proto/vlan_tci.
	protocol           uint16
	vlan               bool
	vlanProto, vlanTCI uint16
	// network is the frame offset of skb->data (and the network header)
	// at the hooks: what the frame has beyond it is skb->len.
	network int
}

// skbProtocol is skb_protocol(skb, false) (include/linux/skbuff.h): the
// protocol tcf_classify compares a filter's protocol with, and fl_classify
// starts basic.n_proto from.
func (s *skb) skbProtocol() uint16 {
	if s.vlan {
		return s.vlanProto
	}
	return s.protocol
}

// len is skb->len at the hooks.
func (s *skb) len() int { return len(s.frame) - s.network }

// receive runs the receive path on frame. A reason is returned for a
// frame whose skb is not the frame's own reading: one the path drops or
// whose skb->protocol it makes up.
func receive(frame []byte) (s skb, why string) {
	if len(frame) < ethHLen {
		return s, "shorter than an Ethernet header"
	}
	s.frame = frame
	proto := binary.BigEndian.Uint16(frame[12:])
	// eth_type_trans: a length field is no protocol; skb->protocol
	// becomes ETH_P_802_3 (raw IPX, 0xFFFF next) or ETH_P_802_2.
	if proto < eth8023Min {
		return s, "802.3 length field: eth_type_trans makes skb->protocol ETH_P_802_3 or ETH_P_802_2"
	}
	s.protocol, s.network = proto, ethHLen
	if !ethTypeVLAN(proto) {
		return s, ""
	}
	// skb_vlan_untag: pskb_may_pull(VLAN_HLEN + 2) or the skb is freed,
	// since vlan_set_encap_proto may read the two bytes after the tag.
	if len(frame) < ethHLen+vlanHLen+2 {
		return s, "VLAN tag with fewer than 6 bytes: skb_vlan_untag drops the frame"
	}
	s.vlan, s.vlanProto = true, proto
	s.vlanTCI = binary.BigEndian.Uint16(frame[ethHLen:])
	s.protocol = binary.BigEndian.Uint16(frame[ethHLen+2:])
	s.network = ethHLen + vlanHLen
	// vlan_set_encap_proto: a length after the tag is replaced by
	// ETH_P_802_3 or ETH_P_802_2, as eth_type_trans does.
	if s.protocol < eth8023Min {
		return s, "802.3 length field after the outer tag: vlan_set_encap_proto makes skb->protocol ETH_P_802_3 or ETH_P_802_2"
	}
	return s, ""
}
