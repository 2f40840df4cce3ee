package selftests

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// XDP programs the rate table compares xdpflow with.

// readingDrop reads the packet (the IPv4 protocol byte, after a bounds
// check) before XDP_DROP: what any program that looks at the packet pays
// for bringing it into the CPU's cache, which bare XDP_DROP never does.
var readingDrop = asm.Instructions{
	asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
	asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
	asm.Mov.Reg(asm.R4, asm.R2),
	asm.Add.Imm(asm.R4, 14+20),
	asm.JGT.Reg(asm.R4, asm.R3, "drop"),
	asm.LoadMem(asm.R0, asm.R2, 14+9, asm.Byte),
	asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
	asm.Return(),
}

// lookupDrop looks the packet's IPv4 addresses and ports up in a 16-byte
// key hash map (one BPF hash lookup: the least a table-driven classifier
// does), then drops: a floor for any such program.
func lookupDrop(m *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 14+24),
		asm.JGT.Reg(asm.R4, asm.R3, "drop"),
		asm.LoadMem(asm.R5, asm.R2, 14+12, asm.DWord), // saddr, daddr
		asm.StoreMem(asm.RFP, -16, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, 14+20, asm.Word), // ports
		asm.StoreMem(asm.RFP, -8, asm.R5, asm.Word),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
	}
}
