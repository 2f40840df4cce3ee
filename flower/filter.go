package flower

import (
	"fmt"
	"net"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// The kernel's TC filters, read over rtnetlink. A kernel filter is turned
// into flower's own words (decode.go, decode_actions.go) and parsed by
// ruletext.ParseFlower, so a mirrored filter means exactly what the same
// `xdpflow filter add` means; every attribute is accounted for, and one
// this package does not know makes the filter not offloadable (never a
// wider or narrower match). The attribute numbers are the kernel's uapi
// (attrs.go).

// KernelFilter is one filter of a device's ingress as the kernel holds it.
type KernelFilter struct {
	Ifindex  int
	Chain    uint32
	Prio     uint16
	Protocol uint16 // host order
	Handle   uint32
	Kind     string // "flower", "u32", "bpf", ...
	Flags    uint32 // FlagSkipHW, ...
	// Rule is the filter in xdpflow's model (Source tc), nil when Err says
	// why it has none. Actions' Ifindex are resolved.
	Rule *rule.Rule
	// Err: the filter (or the part named) cannot be run in XDP.
	Err error
	// Punt is what of the match is known when Err is set: a rule matching
	// at least every packet the filter matches (keys xdpflow cannot read
	// left out), for the punt entry that keeps the filter's packets for TC.
	Punt *rule.Rule
	// Packets and Bytes are the kernel's counters (the first action's).
	Packets, Bytes uint64

	keepalive struct { // Rule with a keepalive (withKeepalive)
		d    time.Duration
		rule *rule.Rule
	}
}

// ID names the filter the way tc addresses it.
func (f *KernelFilter) ID() string {
	return fmt.Sprintf("chain %d pref %d handle 0x%x", f.Chain, f.Prio, f.Handle)
}

// DecodeFilter decodes an RTM_NEWTFILTER message (a dump entry or a
// notification). ifname resolves ifindexes to names (nil: net.InterfaceByIndex).
func DecodeFilter(b []byte, dev string, ifname func(int) (string, error)) (*KernelFilter, error) {
	hdr, attrs, err := ParseTCMsg(b)
	if err != nil {
		return nil, err
	}
	f := &KernelFilter{Ifindex: int(hdr.Ifindex), Handle: hdr.Handle, Prio: uint16(hdr.Info >> 16),
		Protocol: rule.BE16ToHost(uint16(hdr.Info))}
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return nil, err
	}
	var options []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.TCA_KIND:
			f.Kind = ad.String()
		case unix.TCA_OPTIONS:
			options = ad.Bytes()
		case unix.TCA_CHAIN:
			f.Chain = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("tc filter %s: %w", f.ID(), err)
	}
	if ifname == nil {
		ifname = func(i int) (string, error) {
			ifi, err := net.InterfaceByIndex(i)
			if err != nil {
				return "", err
			}
			return ifi.Name, nil
		}
	}
	f.translate(dev, options, ifname)
	return f, nil
}

// translate fills Rule, or Err and Punt.
func (f *KernelFilter) translate(dev string, options []byte, ifname func(int) (string, error)) {
	// A filter of protocol all whose flower key names an ethertype matches
	// that protocol only: model it as that protocol (the key is not a word).
	proto := f.Protocol
	base := func() *rule.Rule {
		return &rule.Rule{Source: rule.SourceTC, Dev: dev, Chain: f.Chain, Prio: f.Prio, Handle: f.Handle,
			Protocol: proto}
	}
	punt := func(err error, known []string) {
		f.Err = err
		r := base()
		r.Handle = PuntHandle
		if perr := ruletext.ParseFlower(known, r); perr != nil {
			// Even the known part does not parse: the punt covers the
			// filter's whole pref and protocol.
			r = base()
			r.Handle = PuntHandle
		}
		r.Actions = []rule.Action{{Kind: rule.ActPass}}
		r.Text = ruletext.Format(r)
		f.Punt = r
	}
	if f.Kind != "flower" {
		punt(ruletext.Unsupported("classifier %q", f.Kind), nil)
		// The punt covers the pref: one for all of the classifier's entries.
		f.Punt.Handle = 0
		f.Punt.Text = ruletext.Format(f.Punt)
		return
	}
	d := flowerDecoder{ifname: ifname}
	if err := d.decode(options); err != nil {
		punt(fmt.Errorf("decode: %w", err), nil)
		return
	}
	f.Flags = d.flags
	f.Packets, f.Bytes = d.packets, d.bytes
	// The kernel keeps the innermost ethertype as the key's eth_type:
	// the protocol, or the vlan_ethtype/cvlan_ethtype under VLAN tags.
	switch {
	case d.ethType == 0 || d.ethType == proto || d.ethType == d.innerEthType:
	case proto == rule.EthPAll:
		proto = d.ethType
	default:
		punt(ruletext.Unsupported("flower eth_type 0x%04x differs from the filter's protocol", d.ethType), nil)
		return
	}
	if d.unknown != nil {
		punt(d.unknown, d.words)
		return
	}
	r := base()
	if err := ruletext.ParseFlower(append(append([]string(nil), d.words...), d.actions...), r); err != nil {
		punt(err, d.words)
		return
	}
	if d.actionErr != nil {
		punt(d.actionErr, d.words)
		return
	}
	r.SkipHW, r.SkipSW = f.Flags&FlagSkipHW != 0, f.Flags&FlagSkipSW != 0
	for i := range r.Actions {
		if a := &r.Actions[i]; a.Kind == rule.ActRedirect {
			a.Ifindex = d.redirectIfindex[i]
		}
	}
	r.Text = ruletext.Format(r)
	f.Rule = r
}
