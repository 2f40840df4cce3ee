package main

import (
	"github.com/xdpflow/xdpflow/flower"
)

// `filter add` and `filter del` on a kernel with cls_flower put the filter
// into the kernel's TC, as tc would (filterEdit), and the device's TC
// filters are then mirrored into XDP exactly as the daemon mirrors them
// (flower.Mirror, installTC), so the CLI needs no daemon and both agree.

// kernelFilters reads the device's ingress filters (none without an
// ingress qdisc).
func kernelFilters(s *session) ([]*flower.KernelFilter, error) {
	rd, err := flower.NewReader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return rd.Filters(s.dev.Name, s.dev.Ifindex)
}
