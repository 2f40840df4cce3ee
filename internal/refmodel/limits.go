package refmodel

// maxIPv6OptHdrs is how many IPv6 hop-by-hop, routing and destination
// options headers the datapath walks (XF_MAX_IPV6_EXT_HDRS less the header
// after them): its loop is bounded for the verifier.
const maxIPv6OptHdrs = 7

// datapathLimit says why the datapath punts a frame whose key the kernel's
// readings would allow, or "". None of these changes a packet's fate: the
// kernel classifies what the datapath leaves to it.
func datapathLimit(s *skb, fk *flowerKey) string {
	switch {
	case fk.optHdrs > maxIPv6OptHdrs:
		return "more IPv6 extension headers than the datapath walks"
	case (fk.nProto == ethPARP || fk.nProto == ethPRARP) && !fk.arpKeyed:
		// The dissector leaves every ARP key zero, which the key could
		// hold; the datapath keys only what the dissector does.
		return "ARP the dissector does not key (not an Ethernet/IPv4 request or reply, or cut short)"
	case fk.fragHdr && fk.firstFrag && fk.ipProto == ipprotoAH:
		// Both readings stop at the AH header (ipv6_find_hdr walks on
		// past a first fragment to it); the datapath leaves every
		// extension header after a fragment header to the kernel, as
		// for the others the two readings differ.
		return "AH after a first fragment"
	case fk.tags == 2 && fk.vlan[1].ethType < eth8023Min:
		// Only the outer tag goes through vlan_set_encap_proto; the
		// dissector keys this length as it is.
		return "802.3 length after the inner tag"
	case fk.tags == 2:
		// Past two tags nft sees no IP header (skb->protocol is a TPID),
		// but the datapath checks one as it does under one tag.
		inner := skb{frame: s.frame, protocol: fk.vlan[1].ethType, network: s.network + vlanHLen}
		if why := nftAgrees(&inner, fk); why != "" {
			return "under two tags, as under one: " + why
		}
	}
	return ""
}
