package flower

// The kernel's TC attribute numbers flower filters are read and written
// in: its uapi, include/uapi/linux/pkt_cls.h and tc_act/*.h.

// The TCA_FLOWER_* attributes.
const (
	tcaFlowerClassID          = 1
	tcaFlowerIndev            = 2
	tcaFlowerAct              = 3
	tcaFlowerKeyEthDst        = 4
	tcaFlowerKeyEthDstMask    = 5
	tcaFlowerKeyEthSrc        = 6
	tcaFlowerKeyEthSrcMask    = 7
	tcaFlowerKeyEthType       = 8
	tcaFlowerKeyIPProto       = 9
	tcaFlowerKeyIPv4Src       = 10
	tcaFlowerKeyIPv4SrcMask   = 11
	tcaFlowerKeyIPv4Dst       = 12
	tcaFlowerKeyIPv4DstMask   = 13
	tcaFlowerKeyIPv6Src       = 14
	tcaFlowerKeyIPv6SrcMask   = 15
	tcaFlowerKeyIPv6Dst       = 16
	tcaFlowerKeyIPv6DstMask   = 17
	tcaFlowerKeyTCPSrc        = 18
	tcaFlowerKeyTCPDst        = 19
	tcaFlowerKeyUDPSrc        = 20
	tcaFlowerKeyUDPDst        = 21
	tcaFlowerFlags            = 22
	tcaFlowerKeyVlanID        = 23
	tcaFlowerKeyVlanPrio      = 24
	tcaFlowerKeyVlanEthType   = 25
	tcaFlowerKeyTCPSrcMask    = 35
	tcaFlowerKeyTCPDstMask    = 36
	tcaFlowerKeyUDPSrcMask    = 37
	tcaFlowerKeyUDPDstMask    = 38
	tcaFlowerKeySCTPSrcMask   = 39
	tcaFlowerKeySCTPDstMask   = 40
	tcaFlowerKeySCTPSrc       = 41
	tcaFlowerKeySCTPDst       = 42
	tcaFlowerKeyFlags         = 47
	tcaFlowerKeyFlagsMask     = 48
	tcaFlowerKeyICMPv4Code    = 49
	tcaFlowerKeyICMPv4CodeMsk = 50
	tcaFlowerKeyICMPv4Type    = 51
	tcaFlowerKeyICMPv4TypeMsk = 52
	tcaFlowerKeyICMPv6Code    = 53
	tcaFlowerKeyICMPv6CodeMsk = 54
	tcaFlowerKeyICMPv6Type    = 55
	tcaFlowerKeyICMPv6TypeMsk = 56
	tcaFlowerKeyARPSIP        = 57
	tcaFlowerKeyARPSIPMask    = 58
	tcaFlowerKeyARPTIP        = 59
	tcaFlowerKeyARPTIPMask    = 60
	tcaFlowerKeyARPOp         = 61
	tcaFlowerKeyARPOpMask     = 62
	tcaFlowerKeyARPSha        = 63
	tcaFlowerKeyARPShaMask    = 64
	tcaFlowerKeyARPTha        = 65
	tcaFlowerKeyARPThaMask    = 66
	tcaFlowerKeyTCPFlags      = 71
	tcaFlowerKeyTCPFlagsMask  = 72
	tcaFlowerKeyIPTOS         = 73
	tcaFlowerKeyIPTOSMask     = 74
	tcaFlowerKeyIPTTL         = 75
	tcaFlowerKeyIPTTLMask     = 76
	tcaFlowerKeyCVlanID       = 77
	tcaFlowerKeyCVlanPrio     = 78
	tcaFlowerKeyCVlanEthType  = 79
	tcaFlowerInHWCount        = 86
	tcaFlowerKeyPortSrcMin    = 87
	tcaFlowerKeyPortSrcMax    = 88
	tcaFlowerKeyPortDstMin    = 89
	tcaFlowerKeyPortDstMax    = 90
)

// flowerKeyNames names the keys xdpflow does not run, for the reason shown.
var flowerKeyNames = map[uint16]string{
	1: "classid", 26: "enc_key_id", 27: "enc_src_ip", 28: "enc_src_ip", 29: "enc_dst_ip", 30: "enc_dst_ip",
	31: "enc_src_ip", 32: "enc_src_ip", 33: "enc_dst_ip", 34: "enc_dst_ip", 43: "enc_src_port",
	44: "enc_src_port", 45: "enc_dst_port", 46: "enc_dst_port", 67: "mpls_ttl", 68: "mpls_bos", 69: "mpls_tc",
	70: "mpls_label", 80: "enc_tos", 81: "enc_tos", 82: "enc_ttl", 83: "enc_ttl", 84: "enc_opts", 85: "enc_opts",
	91: "ct_state", 92: "ct_state", 93: "ct_zone", 94: "ct_zone", 95: "ct_mark", 96: "ct_mark", 97: "ct_label",
	98: "ct_label", 99: "mpls", 100: "hash", 101: "hash", 102: "num_of_vlans", 103: "pppoe_sid",
	104: "ppp_proto", 105: "l2tpv3_sid", 106: "l2_miss", 107: "cfm", 108: "spi", 109: "spi",
	110: "enc_flags", 111: "enc_flags",
}

// Action attributes (TCA_ACT_*, and each kind's).
const (
	tcaActKind    = 1
	tcaActOptions = 2
	tcaActStats   = 4
	tcaStatsBasic = 1
	tcaStatsPkt64 = 8

	tcaGactParms   = 2
	tcaGactProb    = 3
	tcaMirredParms = 2
	tcaVlanParms   = 2
	tcaVlanID      = 3
	tcaVlanProto   = 4
	tcaVlanPrio    = 6

	tcEgressRedir  = 1
	tcEgressMirror = 2
	tcIngressRedir = 3
	tcIngressMirr  = 4

	tcActOK         = 0
	tcActReclassify = 1
	tcActShot       = 2
	tcActPipe       = 3
	tcActStolen     = 4
	tcActTrap       = 8
	tcActJump       = 1 << 28
	tcActGotoChain  = 2 << 28
	tcActOpcodeMask = 0xF << 28
)

// The vlan action's modes (TCA_VLAN_ACT_*) and the flower key flags
// (TCA_FLOWER_KEY_FLAGS_*).
const (
	tcVlanPop               = 1
	tcVlanPush              = 2
	tcVlanModify            = 3
	tcVlanPopEth            = 4
	tcVlanPushEth           = 5
	tcaFlowerKeyFlagsIsFrag = 1 << 0
	tcaFlowerKeyFlagsFirst  = 1 << 1
)
