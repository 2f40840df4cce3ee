package bpf

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// vlanTagKfunc is the RX VLAN metadata kfunc the program calls when
// xf_vlan_meta is set (see xdpflow.c).
const vlanTagKfunc = "bpf_xdp_metadata_rx_vlan_tag"

// VLANMetaProgramName is the kernel's name of a program loaded with
// LoadSpecVLANMeta: what tells, from the attached program alone, that it
// leaves frames with a tag outside them to the kernel.
const VLANMetaProgramName = "xdpflow_vlan"

// LoadSpec returns the program's collection spec for a load that is not
// device-bound. The verifier refuses a metadata kfunc's call in such a
// program even where it is unreachable (add_kfunc_call checks every
// call), so the call is replaced by its answer on a driver without the
// hint: -EOPNOTSUPP.
func LoadSpec() (*ebpf.CollectionSpec, error) {
	spec, err := LoadXdpflow()
	if err != nil {
		return nil, err
	}
	prog := spec.Programs["xdpflow"]
	replaced := 0
	for i, ins := range prog.Instructions {
		if ins.IsKfuncCall() && ins.Reference() == vlanTagKfunc {
			// Without the call's kfunc metadata, which cilium/ebpf
			// would try to resolve on a mov.
			prog.Instructions[i] = asm.Mov.Imm(asm.R0, -int32(unix.EOPNOTSUPP)).
				WithSymbol(ins.Symbol()).WithSource(ins.Source())
			replaced++
		}
	}
	if replaced == 0 {
		return nil, fmt.Errorf("program spec: no call of %s to replace", vlanTagKfunc)
	}
	return spec, nil
}

// LoadSpecVLANMeta returns the program's collection spec for a load bound
// to ifindex (BPF_F_XDP_DEV_BOUND_ONLY), with xf_vlan_meta set: frames
// whose VLAN tag the driver holds outside them go to the kernel. Such a
// program attaches to ifindex alone, in native mode, and needs a kernel
// that has the kfunc and lets a device-bound program redirect into a
// devmap (6.16; 6.6.94 and later 6.6).
func LoadSpecVLANMeta(ifindex int) (*ebpf.CollectionSpec, error) {
	spec, err := LoadXdpflow()
	if err != nil {
		return nil, err
	}
	prog := spec.Programs["xdpflow"]
	prog.Ifindex = uint32(ifindex)
	prog.Flags |= unix.BPF_F_XDP_DEV_BOUND_ONLY
	prog.Name = VLANMetaProgramName
	if err := spec.Variables["xf_vlan_meta"].Set(uint32(1)); err != nil {
		return nil, err
	}
	return spec, nil
}
