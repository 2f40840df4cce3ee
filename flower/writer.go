package flower

import (
	"errors"
	"fmt"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpflow/xdpflow/rule"
)

// Writer adds and deletes ingress filters over rtnetlink.
type Writer struct {
	c *netlink.Conn
}

// NewWriter opens an rtnetlink socket in the current network namespace.
func NewWriter() (*Writer, error) {
	c, err := dialRoute()
	if err != nil {
		return nil, err
	}
	return &Writer{c: c}, nil
}

// Close closes the socket.
func (w *Writer) Close() error { return w.c.Close() }

// Verb says how a filter add treats an existing filter, as tc's verbs do.
type Verb int

const (
	VerbAdd     Verb = iota // fail if it exists
	VerbReplace             // create or replace
	VerbChange              // replace; fail if it does not exist
)

// EnsureIngress adds a clsact qdisc to ifindex unless it has clsact or
// the ingress qdisc already (tc would make the user add one first), and
// says whether it did.
func (w *Writer) EnsureIngress(ifindex int) (created bool, err error) {
	err = w.qdisc(unix.RTM_NEWQDISC, ifindex, netlink.Create|netlink.Excl)
	if errors.Is(err, unix.EEXIST) {
		// clsact, or an ingress qdisc, is there already.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tc: add clsact to ifindex %d: %w", ifindex, err)
	}
	return true, nil
}

// DeleteIngress removes the clsact qdisc EnsureIngress added.
func (w *Writer) DeleteIngress(ifindex int) error {
	return w.qdisc(unix.RTM_DELQDISC, ifindex, 0)
}

func (w *Writer) qdisc(typ netlink.HeaderType, ifindex int, flags netlink.HeaderFlags) error {
	hdr := TCMsg{Ifindex: int32(ifindex), Handle: 0xFFFF0000, Parent: 0xFFFFFFF1 /* TC_H_CLSACT */}.Marshal()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.TCA_KIND, "clsact")
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append(hdr, attrs...),
	})
	return err
}

// HasFlower says whether the kernel has cls_flower, asking with a filter
// it must refuse either way: an option flower's policy rejects (EINVAL,
// ERANGE) or an unknown classifier (ENOENT). Nothing is installed. The
// device needs an ingress qdisc (EnsureIngress).
func (w *Writer) HasFlower(ifindex int) (bool, error) {
	hdr := TCMsg{Ifindex: int32(ifindex), Parent: IngressParent,
		Info: uint32(0xFFFF)<<16 | uint32(rule.HostToBE16(rule.EthPAll))}.Marshal()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.TCA_KIND, "flower")
	// A MAC address one byte long.
	ae.Bytes(unix.TCA_OPTIONS|netlink.Nested, []byte{5, 0, tcaFlowerKeyEthDst, 0, 0xff, 0, 0, 0})
	attrs, err := ae.Encode()
	if err != nil {
		return false, err
	}
	_, err = w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWTFILTER, Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
		Data:   append(hdr, attrs...),
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err == nil:
		// Accepted after all: take it out again.
		_ = w.Delete(ifindex, 0, 0xFFFF, rule.EthPAll, 0, "")
		return true, nil
	}
	return true, nil
}

// Add installs r on ifindex's ingress (chain r.Chain, pref r.Prio,
// handle r.Handle; 0: the kernel picks) and returns the handle the kernel
// gave it.
func (w *Writer) Add(ifindex int, r *rule.Rule, verb Verb) (uint32, error) {
	data, err := FilterMessage(ifindex, r)
	if err != nil {
		return 0, err
	}
	flags := netlink.Request | netlink.Acknowledge | netlink.Echo
	switch verb {
	case VerbAdd:
		flags |= netlink.Create | netlink.Excl
	case VerbReplace:
		flags |= netlink.Create | netlink.Replace
	case VerbChange:
		flags |= netlink.Replace
	}
	msgs, err := w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWTFILTER, Flags: flags},
		Data:   data,
	})
	if err != nil {
		return 0, fmt.Errorf("tc: add filter pref %d: %w", r.Prio, err)
	}
	// The echo and the acknowledgement are two datagrams, and Execute
	// reads one: read up to the acknowledgement, or it would answer the
	// socket's next request (a batch's next filter).
	isAck := func(m netlink.Message) bool { return m.Header.Type == netlink.Error }
	for acked := slices.ContainsFunc(msgs, isAck); !acked; {
		more, err := w.c.Receive()
		if err != nil {
			return 0, fmt.Errorf("tc: add filter pref %d: %w", r.Prio, err)
		}
		acked = slices.ContainsFunc(more, isAck)
		msgs = append(msgs, more...)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWTFILTER {
			if h, _, err := ParseTCMsg(m.Data); err == nil && h.Handle != 0 {
				return h.Handle, nil
			}
		}
	}
	return r.Handle, nil
}

// FilterMessage is the RTM_NEWTFILTER body (tcmsg and attributes) of r
// as an ingress flower filter of ifindex: a request, or what a
// notification of the filter carries (benchmarks feed the daemon those).
func FilterMessage(ifindex int, r *rule.Rule) ([]byte, error) {
	opts, err := EncodeFilter(r)
	if err != nil {
		return nil, err
	}
	hdr := TCMsg{Ifindex: int32(ifindex), Handle: r.Handle, Parent: IngressParent,
		Info: uint32(r.Prio)<<16 | uint32(rule.HostToBE16(r.Protocol))}.Marshal()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.TCA_KIND, "flower")
	if r.Chain != 0 {
		ae.Uint32(unix.TCA_CHAIN, r.Chain)
	}
	ae.Bytes(unix.TCA_OPTIONS|netlink.Nested, opts)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(hdr, attrs...), nil
}

// Delete removes the ingress filters of pref on ifindex: all of them, or
// the one with handle (of that protocol and classifier kind) when handle
// is not 0.
func (w *Writer) Delete(ifindex int, chain uint32, prio uint16, protocol uint16, handle uint32, kind string) error {
	info := uint32(prio) << 16
	if handle != 0 {
		info |= uint32(rule.HostToBE16(protocol))
	}
	hdr := TCMsg{Ifindex: int32(ifindex), Handle: handle, Parent: IngressParent, Info: info}.Marshal()
	ae := netlink.NewAttributeEncoder()
	if handle != 0 {
		ae.String(unix.TCA_KIND, kind)
	}
	if chain != 0 {
		ae.Uint32(unix.TCA_CHAIN, chain)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = w.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_DELTFILTER, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, attrs...),
	})
	if err != nil {
		return fmt.Errorf("tc: delete filter pref %d: %w", prio, err)
	}
	return nil
}
