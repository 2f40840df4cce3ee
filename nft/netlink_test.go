package nft

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestDecodeChainWildcardDevices: a chain hooked on devices by wildcard
// (NFTA_DEVICE_PREFIX, Linux 6.16: `devices = { "b*" }`) hooks every
// device of that prefix, besides those it names.
func TestDecodeChainWildcardDevices(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_CHAIN_TABLE, "t")
	ae.String(unix.NFTA_CHAIN_NAME, "c")
	ae.Nested(unix.NFTA_CHAIN_HOOK, func(hd *netlink.AttributeEncoder) error {
		hd.Uint32(unix.NFTA_HOOK_HOOKNUM, hookIngress)
		hd.Uint32(unix.NFTA_HOOK_PRIORITY, 0)
		hd.Nested(nftaHookDevs, func(dd *netlink.AttributeEncoder) error {
			dd.String(nftaDeviceName, "eth0")
			dd.String(nftaDevicePrefix, "b")
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := decodeChain(netlink.Message{Data: append([]byte{unix.NFPROTO_NETDEV, 0, 0, 0}, b...)})
	if err != nil {
		t.Fatal(err)
	}
	for dev, want := range map[string]bool{"eth0": true, "b0": true, "b": true, "eth1": false, "ab0": false} {
		if got := ch.hooks(dev); got != want {
			t.Errorf("hooks(%q) = %v, want %v (devices %v, prefixes %v)", dev, got, want, ch.Devices, ch.DevicePrefixes)
		}
	}
}
