package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"

	"github.com/xdpflow/xdpflow/bpf"
	"golang.org/x/sys/unix"
)

// netdev generic netlink family (include/uapi/linux/netdev.h).
const (
	netdevCmdDevGet       = 1
	netdevADevIfindex     = 1
	netdevADevXDPFeatures = 3
	netdevXDPActNdoXmit   = 1 << 2
	ifaTargetNetnsID      = 46 // IFLA_TARGET_NETNSID
)

var errNoXDPFeatures = errors.New("kernel does not report XDP features")

// xdpFeatures returns the device's NETDEV_XDP_ACT_* bits.
func xdpFeatures(ifindex int) (uint64, error) {
	fam, err := netlink.GenlFamilyGet("netdev")
	if err != nil {
		return 0, errNoXDPFeatures
	}
	req := nl.NewNetlinkRequest(int(fam.ID), unix.NLM_F_REQUEST)
	req.AddData(&nl.Genlmsg{Command: netdevCmdDevGet, Version: 1})
	req.AddData(nl.NewRtAttr(netdevADevIfindex, nl.Uint32Attr(uint32(ifindex))))
	msgs, err := req.Execute(unix.NETLINK_GENERIC, 0)
	if err != nil || len(msgs) == 0 {
		return 0, fmt.Errorf("query XDP features of ifindex %d: %v", ifindex, err)
	}
	attrs, err := nl.ParseRouteAttr(msgs[0][nl.SizeofGenlmsg:])
	if err != nil {
		return 0, err
	}
	for _, a := range attrs {
		if a.Attr.Type == netdevADevXDPFeatures && len(a.Value) >= 8 {
			return binary.LittleEndian.Uint64(a.Value), nil
		}
	}
	return 0, errNoXDPFeatures
}

// vethPeer returns a veth's peer, which may live in another namespace
// (reached with IFLA_TARGET_NETNSID).
func vethPeer(l netlink.Link) (netlink.Link, error) {
	a := l.Attrs()
	if a.NetNsID < 0 {
		return netlink.LinkByIndex(a.ParentIndex)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.ParentIndex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(ifaTargetNetnsID, nl.Uint32Attr(uint32(a.NetNsID))))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("look up the peer of %s: %v", a.Name, err)
	}
	return netlink.LinkDeserialize(nil, msgs[0])
}

// CheckXDPForward reports why frames that arrive on ingress and that an
// XDP program sends out of target (redirect; XDP_TX when target is
// ingress) would be lost or damaged, or nil.
func CheckXDPForward(ingress, target int) error {
	if err := CheckXDPIngress(ingress); err != nil {
		return err
	}
	return CheckXDPTarget(target, target == ingress)
}

// CheckXDPIngress is CheckXDPForward's question about the ingress
// device alone (its answer holds for every target): a veth hands XDP what its peer's stack sent, and with
// the peer's TX checksum offload on (a veth's default) a TCP or UDP packet
// comes with its checksum left for the "hardware" to finish
// (CHECKSUM_PARTIAL). The skb says so; an XDP frame cannot. XDP_PASS keeps
// the skb, so the kernel still finishes the checksum; a redirected or
// bounced frame leaves with it unfinished, and the receiver drops it
// (UdpInCsumErrors: seen on this project's machines). So forwarding in
// XDP from such a veth is refused, naming the fix.
func CheckXDPIngress(ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("ifindex %d: no such device", ifindex)
	}
	if l.Type() != "veth" {
		return nil
	}
	peer, err := vethPeer(l)
	if err != nil {
		return err
	}
	name, peerName := l.Attrs().Name, peer.Attrs().Name
	feats, err := peerFeatures(peerName, l.Attrs().NetNsID)
	if err != nil {
		return fmt.Errorf("forwarding from %s: cannot read the TX checksum offload of its peer %s: %w", name, peerName, err)
	}
	for _, f := range []string{"tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6", "tx-checksum-sctp"} {
		if feats[f] {
			return fmt.Errorf("forwarding from %s in XDP would lose packets: its veth peer %s offloads TX checksums (%s), "+
				"so TCP and UDP packets its stack sends come unfinished, which only the kernel's path completes "+
				"(ethtool -K %s tx off)", name, peerName, f, peerName)
		}
	}
	return nil
}

// CheckXDPTarget reports why frames an XDP program sends out of ifindex
// would be lost, or nil. tx: the frames go back out of the device they came
// in on (XDP_TX); otherwise they are redirected to it.
//
// A redirect into a veth needs its peer's NAPI: the peer runs an XDP program
// or has GRO on; otherwise the kernel drops the frames. XDP_TX on a veth queues frames to
// the peer, whose NAPI the kernel schedules for them only when the peer
// runs an XDP program: without one they are stranded.
//
// Either way the frame skips the target's egress path, which the kernel's
// redirect takes: a target whose egress path could change a packet's
// fate (EgressHooks) is refused.
func CheckXDPTarget(ifindex int, tx bool) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("ifindex %d: no such device", ifindex)
	}
	name := l.Attrs().Name
	hooks, err := EgressHooks(ifindex)
	if err != nil {
		return fmt.Errorf("redirect to %s: cannot read its egress path: %w", name, err)
	}
	if len(hooks) > 0 {
		return &HooksError{Where: "the egress of " + name, Hooks: hooks}
	}
	if l.Type() == "veth" {
		peer, err := vethPeer(l)
		if err != nil {
			return err
		}
		peerName := peer.Attrs().Name
		if x := peer.Attrs().Xdp; x != nil && x.Attached {
			return nil // the peer's XDP program means NAPI for both cases
		}
		if tx {
			return fmt.Errorf("back out of veth %s (XDP_TX) would lose packets: its peer %s runs no XDP program, "+
				"and the kernel delivers XDP_TX frames to a veth peer only when it does (enable xdpflow on %s)",
				name, peerName, peerName)
		}
		feats, err := peerFeatures(peerName, l.Attrs().NetNsID)
		gro := feats["rx-gro"]
		if err != nil {
			return fmt.Errorf("redirect to %s: cannot tell whether its peer %s takes XDP frames: %w", name, peerName, err)
		}
		if !gro {
			return fmt.Errorf("redirect to %s would lose packets: a veth takes XDP frames only while its peer runs "+
				"an XDP program or has GRO on, and %s has neither (ethtool -K %s gro on)", name, peerName, peerName)
		}
		return nil
	}
	if tx {
		return nil // XDP_TX on other drivers needs nothing of a peer
	}
	// Other drivers say whether they transmit XDP frames in xdp_features
	// (the netdev family answers in the initial network namespace only).
	if feat, err := xdpFeatures(ifindex); err == nil && feat&netdevXDPActNdoXmit == 0 {
		return fmt.Errorf("redirect to %s would lose packets: its driver cannot transmit XDP frames", name)
	}
	return nil
}

// peerFeatures reads a device's ethtool features (rx-gro,
// tx-checksum-ip-generic, ...) in the network namespace this one knows as
// nsid (-1: this one).
func peerFeatures(dev string, nsid int) (map[string]bool, error) {
	target := netns.None()
	if nsid >= 0 {
		h, err := findNetns(nsid)
		if err != nil {
			return nil, err
		}
		defer h.Close()
		target = h
	}
	var feats map[string]bool
	var ferr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with us
		if target.IsOpen() {
			if ferr = netns.Set(target); ferr != nil {
				return
			}
		}
		feats, ferr = readFeatures(dev)
	}()
	<-done
	return feats, ferr
}

// featureIndex is where each ethtool feature's bit is, read once: the
// kernel names its features in one table for every device.
var featureIndex struct {
	sync.Mutex
	bits map[string]uint
}

// ethtoolGFeatures is struct ethtool_gfeatures with room for 256
// features; the kernel fills as many blocks as it has (2 or 3).
type ethtoolGFeatures struct {
	cmd, size uint32
	blocks    [8]struct{ available, requested, active, neverChanged uint32 }
}

// ifreqData is struct ifreq with ifr_data set.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

// readFeatures reads dev's active ethtool features in the calling
// thread's network namespace: the feature names once (the library's call
// reads them, into a 1 MB buffer, on every call: 1.35 ms of the 2.2 a
// forward check took), then one ETHTOOL_GFEATURES.
func readFeatures(dev string) (map[string]bool, error) {
	featureIndex.Lock()
	bits := featureIndex.bits
	featureIndex.Unlock()
	if bits == nil {
		e, err := ethtool.NewEthtool()
		if err != nil {
			return nil, err
		}
		bits, err = e.FeatureNames(dev)
		e.Close()
		if err != nil {
			return nil, err
		}
		featureIndex.Lock()
		featureIndex.bits = bits
		featureIndex.Unlock()
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	gf := &ethtoolGFeatures{cmd: ethtool.ETHTOOL_GFEATURES, size: 8}
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], dev)
	ifr.data = unsafe.Pointer(gf)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ethtool.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return nil, fmt.Errorf("ethtool features of %s: %w", dev, errno)
	}
	runtime.KeepAlive(gf)
	feats := make(map[string]bool, len(bits))
	for name, bit := range bits {
		if int(bit/32) < len(gf.blocks) && bit/32 < uint(gf.size) {
			feats[name] = gf.blocks[bit/32].active&(1<<(bit%32)) != 0
		}
	}
	return feats, nil
}

// netnsPaths remembers where findNetns found each nsid. A scan asks the
// kernel about every named namespace and every process's (7 ms here, and
// a forward check does two), while a remembered path is tried with one
// open and one question; a path that no longer leads to that nsid (the
// process exited, its pid was reused, the name was deleted) is scanned
// for again. Paths, not open handles: a handle would keep a namespace
// alive after everything else let it go.
var netnsPaths struct {
	sync.Mutex
	byID map[int]string
}

// findNetns opens the network namespace this one calls nsid, looking at
// named namespaces and those of running processes.
func findNetns(nsid int) (netns.NsHandle, error) {
	netnsPaths.Lock()
	known, ok := netnsPaths.byID[nsid]
	netnsPaths.Unlock()
	if ok {
		if h, ok := openNetnsWithID(known, nsid); ok {
			return h, nil
		}
	}
	paths, _ := filepath.Glob("/run/netns/*")
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	seen := map[uint64]bool{}
	for _, p := range append(paths, procs...) {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		if h, ok := openNetnsWithID(p, nsid); ok {
			netnsPaths.Lock()
			if netnsPaths.byID == nil {
				netnsPaths.byID = map[int]string{}
			}
			netnsPaths.byID[nsid] = p
			netnsPaths.Unlock()
			return h, nil
		}
	}
	return netns.None(), fmt.Errorf("network namespace with id %d not found", nsid)
}

// openNetnsWithID opens the namespace at path if this one calls it nsid.
func openNetnsWithID(path string, nsid int) (netns.NsHandle, bool) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), false
	}
	if id, err := netlink.GetNetNsIdByFd(int(h)); err == nil && id == nsid {
		return h, true
	}
	h.Close()
	return netns.None(), false
}

// CheckVLANVisible reports why XDP on ifindex may not see a frame's VLAN
// tags, or nil. The kernel can carry a tag outside the frame, in the
// skb's metadata: a veth's peer with TX VLAN offload on (a veth's
// default) sends the tags its stack adds that way, and a NIC with RX VLAN
// offload strips them in hardware. TC, nft and the flow dissector see the
// tag either way (skb_vlan_tag_present); XDP sees an untagged frame, and
// an untagged-only rule would decide a tagged packet's fate. So no rule
// of such a device runs in XDP, naming the setting that fixes it.
func CheckVLANVisible(ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("ifindex %d: no such device", ifindex)
	}
	name := l.Attrs().Name
	offloads := func(feats map[string]bool, names ...string) string {
		for _, f := range names {
			if feats[f] {
				return f
			}
		}
		return ""
	}
	if l.Type() == "veth" {
		if readsVLANMeta(l) {
			return nil // the program leaves frames tagged outside them to the kernel
		}
		peer, err := vethPeer(l)
		if err != nil {
			return err
		}
		peerName := peer.Attrs().Name
		feats, err := peerFeatures(peerName, l.Attrs().NetNsID)
		if err != nil {
			return fmt.Errorf("cannot read the TX VLAN offload of %s's peer %s: %w", name, peerName, err)
		}
		if f := offloads(feats, "tx-vlan-hw-insert", "tx-vlan-stag-hw-insert"); f != "" {
			return fmt.Errorf("XDP on %s cannot see the VLAN tags its veth peer %s sends: the peer offloads them (%s), "+
				"so they come outside the frame (ethtool -K %s txvlan off tx-vlan-stag-hw-insert off)", name, peerName, f, peerName)
		}
		return nil
	}
	feats, err := readFeatures(name)
	if err != nil {
		return fmt.Errorf("cannot read the RX VLAN offload of %s: %w", name, err)
	}
	if f := offloads(feats, "rx-vlan-hw-parse", "rx-vlan-stag-hw-parse"); f != "" {
		return fmt.Errorf("XDP on %s cannot see VLAN tags: the device strips them on receive (%s) "+
			"(ethtool -K %s rxvlan off rx-vlan-stag-hw-parse off)", name, f, name)
	}
	return nil
}

// ReadsVLANMeta says whether ifindex's XDP program is xdpflow's
// device-bound one, which leaves frames whose VLAN tag the driver holds
// outside them to the kernel (bpf.LoadSpecVLANMeta).
func ReadsVLANMeta(ifindex int) bool {
	l, err := netlink.LinkByIndex(ifindex)
	return err == nil && readsVLANMeta(l)
}

func readsVLANMeta(l netlink.Link) bool {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return false
	}
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		return false
	}
	defer p.Close()
	info, err := p.Info()
	return err == nil && info.Name == bpf.VLANMetaProgramName
}
