/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Wire formats: the ethertypes and protocol numbers the parser and the
 * actions compare with, in packet byte order where they are 16 bits, and
 * the layouts of the headers the parser reads.
 */
#ifndef XDPFLOW_LIB_PROTO_H
#define XDPFLOW_LIB_PROTO_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

#define ETH_P_8021Q_BE bpf_htons(0x8100)
#define ETH_P_8021AD_BE bpf_htons(0x88A8)
#define ETH_P_IP_BE bpf_htons(0x0800)
#define ETH_P_IPV6_BE bpf_htons(0x86DD)
#define ETH_P_ARP_BE bpf_htons(0x0806)
#define ETH_P_RARP_BE bpf_htons(0x8035)
/* Ethertypes the flow dissector goes on into, replacing n_proto with the
 * payload's protocol. */
#define ETH_P_PPP_SES_BE bpf_htons(0x8864)
#define ETH_P_BATMAN_BE bpf_htons(0x4305)
#define ETH_P_HSR_BE bpf_htons(0x892F)
#define ETH_P_PRP_BE bpf_htons(0x88FB)

#define IPPROTO_ICMPV6_ 58
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define NEXTHDR_AUTH 51
#define IPPROTO_MPLS_ 137

#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1FFF

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

struct iphdr_ {
	__u8 ihl_version; /* ihl in the low nibble on little-endian bitfields; read by hand */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ipv6hdr_ {
	__be32 vtc_flow; /* version 4, traffic class 8, flow label 20 */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct arphdr_eth_ipv4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 sip[4];
	__u8 tha[6];
	__u8 tip[4];
};

#endif /* XDPFLOW_LIB_PROTO_H */
