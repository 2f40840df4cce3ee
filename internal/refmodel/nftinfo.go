package refmodel

// nftInfo is struct nft_pktinfo as nft_do_chain_netdev
// (net/netfilter/nft_chain_filter.c) sets it for the netdev ingress hook:
// nft_set_pktinfo_ipv4_validate or nft_set_pktinfo_ipv6_validate by
// skb->protocol (include/net/netfilter/nf_tables_ipv4.h, nf_tables_ipv6.h),
// nft_set_pktinfo_unspec for anything else or a packet they refuse.
//
// What the expressions xdpflow translates read from it
// (net/netfilter/nft_payload.c nft_payload_eval, nft_meta.c
// nft_meta_get_eval): meta protocol is
// skb->protocol; link-layer payload is the frame as received, the
// untagged outer tag rebuilt (nft_payload_copy_vlan); network-header
// payload is the bytes at skb->data, whatever they are; meta l4proto and
// transport-header payload break the rule (NFT_BREAK) without
// NFT_PKTINFO_L4PROTO, and transport payload also for fragoff != 0 or
// bytes past the skb.
type nftInfo struct {
	l4      bool // NFT_PKTINFO_L4PROTO
	tprot   uint8
	thoff   int // frame offset of the transport header
	fragoff uint16
}

// nftPktinfo is nft_do_chain_netdev's pktinfo for s.
func nftPktinfo(s *skb) nftInfo {
	switch s.protocol {
	case ethPIP:
		return nftIPv4(s)
	case ethPIPv6:
		return nftIPv6(s)
	}
	return nftInfo{}
}

// nftIPv4 is __nft_set_pktinfo_ipv4_validate.
func nftIPv4(s *skb) nftInfo {
	f, off := s.frame, s.network
	if s.len() < 20 {
		return nftInfo{}
	}
	ihl := int(f[off] & 0x0F)
	if ihl < 5 || f[off]>>4 != 4 {
		return nftInfo{}
	}
	// iph_totlen: tot_len, as nothing here is GSO.
	tot := int(f[off+2])<<8 | int(f[off+3])
	thoff := ihl * 4
	if s.len() < tot || tot < thoff {
		return nftInfo{}
	}
	frag := uint16(f[off+6])<<8 | uint16(f[off+7])
	return nftInfo{l4: true, tprot: f[off+9], thoff: off + thoff, fragoff: frag & 0x1FFF}
}

// nftIPv6 is __nft_set_pktinfo_ipv6_validate.
func nftIPv6(s *skb) nftInfo {
	f, off := s.frame, s.network
	if s.len() < 40 || f[off]>>4 != 6 {
		return nftInfo{}
	}
	if plen := int(f[off+4])<<8 | int(f[off+5]); plen+40 > s.len() {
		return nftInfo{}
	}
	proto, thoff, fragoff, ok := ipv6FindHdr(f, off)
	if !ok || thoff-off > 0xFFFF {
		return nftInfo{}
	}
	return nftInfo{l4: true, tprot: proto, thoff: thoff, fragoff: fragoff}
}

// ipv6ExtHdr is ipv6_ext_hdr (include/net/ipv6.h).
func ipv6ExtHdr(h uint8) bool {
	switch h {
	case ipprotoHop, ipprotoRouting, ipprotoFragment, ipprotoAH, ipprotoNone, ipprotoDest:
		return true
	}
	return false
}

// ipv6FindHdr is ipv6_find_hdr (net/ipv6/exthdrs_core.c) with target -1
// and IP6_FH_F_AUTH, as nft calls it: the protocol of the last header (a
// transport header, ESP, "no next header", or AH, where it stops), its
// offset, and the fragment offset of a fragment that is not the first.
// ok is false where it answers an error.
func ipv6FindHdr(f []byte, nh int) (proto uint8, off int, fragoff uint16, ok bool) {
	next, start := f[nh+6], nh+40
	have := func(n int) bool { return start+n <= len(f) }
	for {
		if !ipv6ExtHdr(next) || next == ipprotoNone {
			return next, start, 0, true
		}
		if !have(2) {
			return 0, 0, 0, false // -EBADMSG
		}
		var hdrlen int
		switch next {
		case ipprotoRouting:
			// Reads struct ipv6_rt_hdr for IP6_FH_F_SKIP_RH, asked or not.
			if !have(4) {
				return 0, 0, 0, false
			}
			hdrlen = (int(f[start+1]) + 1) << 3
		case ipprotoFragment:
			if !have(4) {
				return 0, 0, 0, false
			}
			if fo := (uint16(f[start+2])<<8 | uint16(f[start+3])) &^ 7; fo != 0 {
				// A later fragment: its next header is the answer if
				// that is not an extension header, else -ENOENT.
				if n := f[start]; !ipv6ExtHdr(n) || n == ipprotoNone {
					return n, start, fo, true
				}
				return 0, 0, 0, false
			}
			hdrlen = 8
		case ipprotoAH:
			return next, start, 0, true
		default:
			hdrlen = (int(f[start+1]) + 1) << 3 // ipv6_optlen
		}
		next = f[start]
		start += hdrlen
	}
}
