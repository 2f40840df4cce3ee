// Package bpf holds the xdpflow XDP program: its C source, and the object and
// Go bindings bpf2go generates from it (committed, so that `go build` needs
// no clang). `make generate` rebuilds them.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package bpf -type xf_key -type xf_subtable -type xf_subtable_list -type xf_flow_key -type xf_narrow_flow_key -type xf_flow -type xf_ranged_flow -type xf_action -type xf_action_set -type xf_rule_stats -type xf_counter -type xf_action_op -type xf_rule_spec -type xf_meta -type xf_dirty -type xf_limits -type xf_frag -type xf_vlan_flags -type xf_cache_set -type xf_counters Xdpflow xdpflow.c -- -I.
