package nft

import "golang.org/x/sys/unix"

// regSlot is the content of one 32-bit register slot.
type regSlot struct {
	known bool
	start bool   // first slot of a loaded value
	f     field  // loaded field (when !konst)
	mask  []byte // bitwise mask applied to the field (nil: all ones)
	konst []byte // immediate data
}

type regFile struct {
	slots [16]regSlot
}

// regIndex maps an nft register to its first 32-bit slot: NFT_REG_1..4
// are 16 bytes each, NFT_REG32_00..15 four bytes each.
func regIndex(r uint32) (int, bool) {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 4, true
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r - unix.NFT_REG32_00), true
	}
	return 0, false
}

func (rf *regFile) set(r uint32, s regSlot, n uint32) {
	i, ok := regIndex(r)
	if !ok {
		return
	}
	// The value's first slot holds it; the slots it spills into hold
	// nothing readable on their own.
	s.start = true
	rf.slots[i] = s
	for k := 1; k < int((n+3)/4) && i+k < len(rf.slots); k++ {
		rf.slots[i+k] = regSlot{}
	}
}

func (rf *regFile) get(r uint32) (regSlot, int, bool) {
	i, ok := regIndex(r)
	if !ok || !rf.slots[i].known || !rf.slots[i].start {
		return regSlot{}, 0, false
	}
	return rf.slots[i], i, true
}
