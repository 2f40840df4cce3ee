/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The parser: a frame into struct xf_key, as the kernel's flow dissector
 * builds cls_flower's key. Anything it does not understand is
 * PARSE_UNSUPPORTED, which the program leaves to the kernel; so is a frame
 * whose VLAN tag the driver holds outside it (xf_vlan_meta), which it
 * cannot see.
 */
#ifndef XDPFLOW_LIB_PARSE_H
#define XDPFLOW_LIB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdpflow.h"
#include "proto.h"

/* The kernel may carry a frame's VLAN tag outside it, in the skb's
 * metadata (a veth whose peer has TX VLAN offload on, a NIC stripping
 * tags): TC and nft see the tag, this program would see an untagged
 * frame. Where the driver says (the RX VLAN metadata kfunc, veth since
 * 6.8), such a frame is left to the kernel. The kfunc is allowed in
 * device-bound programs only, and the verifier checks every call, even an
 * unreachable one: the loader sets xf_vlan_meta and loads device-bound,
 * or replaces the call (bpf/spec.go). */
extern int bpf_xdp_metadata_rx_vlan_tag(const struct xdp_md *ctx, __be16 *vlan_proto,
					__u16 *vlan_tci) __ksym __weak;
volatile const __u32 xf_vlan_meta = 0;

/*
 * Whole-word loads from the packet. To the compiler the headers' byte
 * arrays (MACs, addresses) are byte-aligned, so a memcpy from one becomes
 * a load, shift and OR per byte: that was a third of the time the program
 * spends on a cached packet. These casts tell the compiler "aligned", so
 * each compiles to one load; the packet itself is only 2-byte aligned from
 * the IP header on. The verifier accepts unaligned packet loads unless it
 * enforces strict alignment, which it does only on architectures without
 * efficient unaligned access (not x86-64 or arm64) or when the loader asks
 * (xdpflow does not). Stores go to the key on the stack, where the
 * verifier wants natural alignment: every one below is at an offset that
 * is a multiple of its size.
 */
/* The layout those stores rely on. */
_Static_assert(__builtin_offsetof(struct xf_key, eth_dst) == 4 &&
		       __builtin_offsetof(struct xf_key, eth_src) == 10,
	       "MACs at key offsets 4..15");
_Static_assert(__builtin_offsetof(struct xf_key, src_ip) % 8 == 0 &&
		       __builtin_offsetof(struct xf_key, dst_ip) % 8 == 0,
	       "addresses 8-byte aligned in the key");
_Static_assert(__builtin_offsetof(struct xf_key, src_port) % 4 == 0 &&
		       __builtin_offsetof(struct xf_key, dst_port) ==
			       __builtin_offsetof(struct xf_key, src_port) + 2,
	       "ports one aligned 32-bit word");

static __always_inline __u32 pkt32(const void *p)
{
	return *(const __u32 *)p;
}

static __always_inline __u64 pkt64(const void *p)
{
	return *(const __u64 *)p;
}

/* Both ports (or ICMP type and code and what follows), which the packet
 * and the key hold in the same order. */
static __always_inline void put_ports(struct xf_key *key, const void *l4)
{
	*(__u32 *)&key->src_port = pkt32(l4);
}

enum parse_result {
	PARSE_OK = 0,
	PARSE_UNSUPPORTED = -1, /* malformed or truncated: leave it to the kernel */
};

/* Fills key->src_port.. for TCP/UDP/SCTP and ICMP from the L4 header at l4.
 * A truncated L4 header is unsupported (the dissector would stop short and
 * flower would match zeros; we do not guess). */
static __always_inline int parse_l4(void *l4, void *data_end, struct xf_key *key, int icmp_proto)
{
	switch (key->ip_proto) {
	case IPPROTO_TCP: {
		__u8 *th = l4;

		if ((void *)(th + 20) > data_end)
			return PARSE_UNSUPPORTED;
		/* A data offset below 5 words: the dissector keys no flags
		 * (__skb_flow_dissect_tcp), nft reads the raw byte. */
		if ((th[12] >> 4) < 5)
			return PARSE_UNSUPPORTED;
		put_ports(key, th);
		/* flag word: data offset (4) reserved (3) flags (9); flower
		 * keeps the low 12 bits */
		key->tcp_flags = bpf_htons(((__u16)th[12] << 8 | th[13]) & 0x0FFF);
		return PARSE_OK;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__u8 *uh = l4;

		if ((void *)(uh + 4) > data_end)
			return PARSE_UNSUPPORTED;
		put_ports(key, uh);
		return PARSE_OK;
	}
	case IPPROTO_MPLS_:
		/* __skb_flow_dissect goes on into MPLS (FLOW_DISSECTOR_F_STOP_BEFORE_ENCAP
		 * does not stop it) and ends with n_proto ETH_P_MPLS_UC: flower's
		 * protocol ip/ipv6 and vlan_ethtype ip/ipv6 do not match the
		 * packet, nft's meta protocol does. One key cannot say both. */
		return PARSE_UNSUPPORTED;
	default:
		if (key->ip_proto == icmp_proto) {
			__u8 *ih = l4;

			/* The dissector keys type and code only from a whole
			 * struct icmphdr (skb_flow_get_icmp_tci); nft reads
			 * single bytes. Below 8 bytes the two disagree. */
			if ((void *)(ih + 8) > data_end)
				return PARSE_UNSUPPORTED;
			key->icmp_type = ih[0];
			key->icmp_code = ih[1];
		}
		return PARSE_OK;
	}
}

static __always_inline int parse_ipv4(void *l3, void *data_end, struct xf_key *key)
{
	struct iphdr_ *iph = l3;
	__u32 ihl, tot_len;
	__u16 frag;

	if ((void *)(iph + 1) > data_end)
		return PARSE_UNSUPPORTED;
	if ((iph->ihl_version >> 4) != 4)
		return PARSE_UNSUPPORTED;
	ihl = (iph->ihl_version & 0x0F) * 4;
	if (ihl < sizeof(*iph))
		return PARSE_UNSUPPORTED;
	/* nft's netdev validation (__nft_set_pktinfo_ipv4_validate) gives a
	 * packet whose total length exceeds the frame, or is shorter than its
	 * header, no transport header at all; the dissector ignores the
	 * length. Such a frame means different things to the two sources. */
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < ihl || tot_len > (__u64)(data_end - l3))
		return PARSE_UNSUPPORTED;

	*(__u32 *)key->src_ip = pkt32(iph->saddr);
	*(__u32 *)key->dst_ip = pkt32(iph->daddr);
	key->ip_proto = iph->protocol;
	key->ip_tos = iph->tos;
	key->ip_ttl = iph->ttl;

	frag = bpf_ntohs(iph->frag_off);
	if (frag & (IP_MF_ | IP_OFFSET_)) {
		/* The dissector, as flower calls it, parses no L4 header of any
		 * fragment, not even the first: ports stay zero. */
		key->ip_frag = XF_FRAG_IS_FRAGMENT;
		if (!(frag & IP_OFFSET_))
			key->ip_frag |= XF_FRAG_FIRST;
		return PARSE_OK;
	}
	return parse_l4(l3 + ihl, data_end, key, IPPROTO_ICMP);
}

static __always_inline int parse_ipv6(void *l3, void *data_end, struct xf_key *key)
{
	struct ipv6hdr_ *ip6 = l3;
	void *cursor;
	__u8 nexthdr;
	__u32 vtc;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return PARSE_UNSUPPORTED;
	vtc = bpf_ntohl(ip6->vtc_flow);
	if ((vtc >> 28) != 6)
		return PARSE_UNSUPPORTED;
	/* As for IPv4: nft_set_pktinfo_ipv6_validate gives a payload longer
	 * than the frame no transport header. */
	if ((__u64)bpf_ntohs(ip6->payload_len) + sizeof(*ip6) > (__u64)(data_end - l3))
		return PARSE_UNSUPPORTED;

	*(__u64 *)key->src_ip = pkt64(ip6->saddr);
	*(__u64 *)(key->src_ip + 8) = pkt64(ip6->saddr + 8);
	*(__u64 *)key->dst_ip = pkt64(ip6->daddr);
	*(__u64 *)(key->dst_ip + 8) = pkt64(ip6->daddr + 8);
	key->ip_tos = (vtc >> 20) & 0xFF;
	key->ip_ttl = ip6->hop_limit;
	nexthdr = ip6->nexthdr;
	cursor = ip6 + 1;

	/* Skip hop-by-hop, routing and destination options headers, as the
	 * dissector does. Bounded: a chain longer than this is left to the
	 * kernel. */
	for (i = 0; i < XF_MAX_IPV6_EXT_HDRS; i++) {
		__u8 *opt = cursor;

		switch (nexthdr) {
		case NEXTHDR_ROUTING:
			/* nft's ipv6_find_hdr reads struct ipv6_rt_hdr (4 bytes)
			 * and finds no protocol without it; the dissector reads
			 * 2 and goes on. */
			if ((void *)(opt + 4) > data_end)
				return PARSE_UNSUPPORTED;
			/* fall through */
		case NEXTHDR_HOP:
		case NEXTHDR_DEST:
			if ((void *)(opt + 2) > data_end)
				return PARSE_UNSUPPORTED;
			nexthdr = opt[0];
			cursor += ((__u32)opt[1] + 1) * 8;
			continue;
		case NEXTHDR_FRAGMENT: {
			__u16 off;

			if ((void *)(opt + 8) > data_end)
				return PARSE_UNSUPPORTED;
			/* An extension header after the fragment header: the
			 * dissector keys it as the protocol, nft's
			 * ipv6_find_hdr walks past it (first fragment) or
			 * finds no protocol (later ones). (Only for AH after
			 * a first fragment would the two agree.) */
			switch (opt[0]) {
			case NEXTHDR_HOP:
			case NEXTHDR_ROUTING:
			case NEXTHDR_FRAGMENT:
			case NEXTHDR_AUTH:
			case NEXTHDR_DEST:
				return PARSE_UNSUPPORTED;
			}
			key->ip_proto = opt[0];
			off = ((__u16)opt[2] << 8 | opt[3]) & 0xFFF8;
			key->ip_frag = XF_FRAG_IS_FRAGMENT;
			if (!off)
				key->ip_frag |= XF_FRAG_FIRST;
			/* no L4 keys for fragments (see parse_ipv4) */
			return PARSE_OK;
		}
		case NEXTHDR_AUTH:
			/* The last header for both: the dissector stops at AH,
			 * and so does ipv6_find_hdr as nft asks it
			 * (IP6_FH_F_AUTH), once it has read the header's first
			 * 2 bytes. */
			if ((void *)(opt + 2) > data_end)
				return PARSE_UNSUPPORTED;
			key->ip_proto = nexthdr;
			return PARSE_OK;
		default:
			key->ip_proto = nexthdr;
			return parse_l4(cursor, data_end, key, IPPROTO_ICMPV6_);
		}
	}
	return PARSE_UNSUPPORTED;
}

static __always_inline int parse_arp(void *l3, void *data_end, struct xf_key *key)
{
	struct arphdr_eth_ipv4 *arp = l3;

	if ((void *)(arp + 1) > data_end)
		return PARSE_UNSUPPORTED;
	/* The dissector keys only Ethernet/IPv4 requests and replies
	 * (__skb_flow_dissect_arp); for anything else it leaves every ARP key
	 * zero, while nft reads the bytes. */
	if (arp->hrd != bpf_htons(1) || arp->pro != ETH_P_IP_BE || arp->hln != 6 || arp->pln != 4 ||
	    (arp->op != bpf_htons(1) && arp->op != bpf_htons(2)))
		return PARSE_UNSUPPORTED;
	key->ip_proto = bpf_ntohs(arp->op) & 0xFF;
	__builtin_memcpy(key->src_ip, arp->sip, 4);
	__builtin_memcpy(key->dst_ip, arp->tip, 4);
	__builtin_memcpy(key->arp_sha, arp->sha, 6);
	__builtin_memcpy(key->arp_tha, arp->tha, 6);
	return PARSE_OK;
}

static __always_inline int parse(struct xdp_md *ctx, struct xf_key *key, __u32 *l2_len)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	void *cursor;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return PARSE_UNSUPPORTED;

	key->ifindex = ctx->ingress_ifindex;
	/* The 12 bytes of MACs: key offsets 4..15, packet offsets 0..11. */
	*(__u32 *)key->eth_dst = pkt32(eth->h_dest);
	*(__u64 *)(key->eth_dst + 4) = pkt64(eth->h_dest + 4);
	proto = eth->h_proto;
	key->eth_type[0] = proto;
	cursor = eth + 1;
	*l2_len = sizeof(*eth);

	for (i = 0; i < XF_MAX_VLAN_TAGS; i++) {
		struct vlan_hdr_ *vh = cursor;

		if (proto != ETH_P_8021Q_BE && proto != ETH_P_8021AD_BE)
			break;
		if ((void *)(vh + 1) > data_end)
			return PARSE_UNSUPPORTED;
		/* The kernel takes the outer tag off before any hook runs
		 * (skb_vlan_untag) and drops the frame when 2 bytes do not
		 * follow the tag. */
		if (i == 0 && (void *)(vh + 1) + 2 > data_end)
			return PARSE_UNSUPPORTED;
		key->vlan_tci[i] = vh->tci;
		proto = vh->proto;
		key->eth_type[i + 1] = proto;
		cursor = vh + 1;
		/* the outer tag goes to skb metadata before TC counts bytes */
		if (i == 0)
			*l2_len += sizeof(*vh);
	}
	/* A third tag: the dissector would skip it, we leave it to the kernel. */
	if (proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE)
		return PARSE_UNSUPPORTED;
	key->l3_proto = i > 0 ? key->eth_type[1] : key->eth_type[0];
	/* An 802.3 length where an ethertype goes: the kernel makes the
	 * protocol ETH_P_802_3 or ETH_P_802_2 from the bytes that follow
	 * (eth_type_trans, vlan_set_encap_proto), which tc's "protocol" and
	 * nft's "meta protocol" match, while "ether type" reads the raw field.
	 * One key cannot say both. (Every type before proto is a TPID.) */
	if (bpf_ntohs(proto) < 0x0600)
		return PARSE_UNSUPPORTED;

	/* PPPoE session, batman-adv, HSR and PRP: __skb_flow_dissect goes on
	 * into the payload and takes n_proto from it (IP under PPPoE, the inner
	 * frame's ethertype), so flower's protocol, vlan_ethtype and
	 * cvlan_ethtype do not see this ethertype, nft's meta protocol does. */
	if (proto == ETH_P_PPP_SES_BE || proto == ETH_P_BATMAN_BE || proto == ETH_P_HSR_BE ||
	    proto == ETH_P_PRP_BE)
		return PARSE_UNSUPPORTED;

	if (proto == ETH_P_IP_BE)
		return parse_ipv4(cursor, data_end, key);
	if (proto == ETH_P_IPV6_BE)
		return parse_ipv6(cursor, data_end, key);
	/* The dissector reads RARP as ARP. */
	if (proto == ETH_P_ARP_BE || proto == ETH_P_RARP_BE)
		return parse_arp(cursor, data_end, key);
	/* Other ethertypes: L2 keys only. */
	return PARSE_OK;
}

#endif /* XDPFLOW_LIB_PARSE_H */
