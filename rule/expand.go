package rule

import (
	"encoding/binary"
	"sort"
	"unsafe"
)

// Entry is one masked flow-table entry: packets whose key, under Mask,
// equals Key, whose ports are in SrcPorts and DstPorts where those are
// set (the mask then has no bits of that port), and whose IPv4 addresses
// are in SrcAddrs and DstAddrs where those are set (longer prefixes than
// the mask's).
type Entry struct {
	Key, Mask          Key
	SrcPorts, DstPorts PortRange
	SrcAddrs, DstAddrs Prefix4
}

// Ranged reports whether the entry has port ranges or address prefixes
// beyond its mask: a flow of a ranged subtable.
func (e *Entry) Ranged() bool {
	return e.SrcPorts.Set() || e.DstPorts.Set() || e.SrcAddrs.Set() || e.DstAddrs.Set()
}

// Blocks is the entry without ranges: one entry per pair of prefix blocks
// that cover its ranges, each with the ports in its mask.
func (e *Entry) Blocks() []Entry {
	src, dst := []portBlock{{0, 0}}, []portBlock{{0, 0}}
	if e.SrcPorts.Set() {
		src = prefixBlocks(e.SrcPorts.Min, e.SrcPorts.Max)
	}
	if e.DstPorts.Set() {
		dst = prefixBlocks(e.DstPorts.Min, e.DstPorts.Max)
	}
	out := make([]Entry, 0, len(src)*len(dst))
	for _, s := range src {
		for _, d := range dst {
			b := Entry{Key: e.Key, Mask: e.Mask}
			if e.SrcPorts.Set() {
				b.Key.SrcPort, b.Mask.SrcPort = HostToBE16(s.value), HostToBE16(s.mask)
			}
			if e.DstPorts.Set() {
				b.Key.DstPort, b.Mask.DstPort = HostToBE16(d.value), HostToBE16(d.mask)
			}
			out = append(out, b)
		}
	}
	return out
}

// inRange reports whether port (network order, as in a key) is in r, or r
// is unset.
func inRange(r PortRange, port uint16) bool {
	p := BE16ToHost(port)
	return !r.Set() || (p >= r.Min && p <= r.Max)
}

// KeyBytes returns the key's bytes in the datapath layout (a copy).
func KeyBytes(k *Key) []byte {
	b := (*[unsafe.Sizeof(Key{})]byte)(unsafe.Pointer(k))
	out := make([]byte, len(b))
	copy(out, b[:])
	return out
}

// KeyWords views a key as the 64-bit words the datapath ANDs (the words
// are the key itself, not a copy).
func KeyWords(k *Key) *[unsafe.Sizeof(Key{}) / 8]uint64 {
	return (*[unsafe.Sizeof(Key{}) / 8]uint64)(unsafe.Pointer(k))
}

// MaskKey returns k & m.
func MaskKey(k, m *Key) Key {
	var out Key
	o, kw, mw := KeyWords(&out), KeyWords(k), KeyWords(m)
	for i := range o {
		o[i] = kw[i] & mw[i]
	}
	return out
}

// UnionKey returns a | b: of masks, the mask that has every bit of both.
func UnionKey(a, b *Key) Key {
	var out Key
	o, aw, bw := KeyWords(&out), KeyWords(a), KeyWords(b)
	for i := range o {
		o[i] = aw[i] | bw[i]
	}
	return out
}

// Covers reports whether packet key p falls under entry e.
func (e *Entry) Covers(p *Key) bool {
	return MaskKey(p, &e.Mask) == e.Key && inRange(e.SrcPorts, p.SrcPort) && inRange(e.DstPorts, p.DstPort) &&
		e.SrcAddrs.Contains(binary.BigEndian.Uint32(p.SrcIp[:4])) && e.DstAddrs.Contains(binary.BigEndian.Uint32(p.DstIp[:4]))
}

// rect is the port part of a ranged match: [src] x [dst]. A dimension
// without a range is the single point 0 (its value lives in the masked key).
type rect struct{ src, dst PortRange }

func (r rect) empty() bool { return r.src.Min > r.src.Max || r.dst.Min > r.dst.Max }

func intersect(a, b PortRange) PortRange {
	lo, hi := max(a.Min, b.Min), min(a.Max, b.Max)
	if lo > hi {
		return PortRange{Min: 1, Max: 0}
	}
	return PortRange{Min: lo, Max: hi}
}

// subtract returns a - b as disjoint rects.
func subtract(a, b rect) []rect {
	is, id := intersect(a.src, b.src), intersect(a.dst, b.dst)
	if is.Min > is.Max || id.Min > id.Max {
		return []rect{a}
	}
	var out []rect
	add := func(r rect) {
		if !r.empty() {
			out = append(out, r)
		}
	}
	// Slice along src, then along dst inside the overlapping src band.
	if a.src.Min < is.Min {
		add(rect{PortRange{a.src.Min, is.Min - 1}, a.dst})
	}
	if is.Max < a.src.Max {
		add(rect{PortRange{is.Max + 1, a.src.Max}, a.dst})
	}
	if a.dst.Min < id.Min {
		add(rect{is, PortRange{a.dst.Min, id.Min - 1}})
	}
	if id.Max < a.dst.Max {
		add(rect{is, PortRange{id.Max + 1, a.dst.Max}})
	}
	return out
}

func (r *Rule) rect() rect {
	return rect{r.Match.SrcPortRange, r.Match.DstPortRange}
}

// portBlock is a prefix: value/mask.
type portBlock struct{ value, mask uint16 }

// prefixBlocks covers [lo, hi] with the fewest value/mask prefixes.
func prefixBlocks(lo, hi uint16) []portBlock {
	var out []portBlock
	l, h := uint32(lo), uint32(hi)
	for l <= h {
		size := uint32(1)
		// Grow the block while it stays aligned and inside the range.
		for size < 1<<16 && l&(size*2-1) == 0 && l+size*2-1 <= h {
			size *= 2
		}
		out = append(out, portBlock{uint16(l), uint16(^(size - 1))})
		l += size
	}
	return out
}

// HasRanges reports whether the rule expands into more than its own mask.
func (r *Rule) HasRanges() bool { return r.Match.Ranged() }

// RangesOrdered reports whether the rule's entries depend on the other
// rules of its group: ranged tc filters (see RangeOrder). nft rules of one
// level never overlap.
func (r *Rule) RangesOrdered() bool {
	return r.Source != SourceNFT && r.HasRanges()
}

// RangeOrder orders the rules of one ranged mask group, given in insertion
// order, by which takes a packet first. fl_lookup_range
// (net/sched/cls_flower.c) walks the filters in insertion order and lends
// the ranges of the first one that holds the packet's ports to a hash
// lookup of the packet's other fields (__fl_lookup), which finds the
// filter with those ranges and fields: of two filters with the same exact
// fields, the one whose ranges a filter of any fields had first wins,
// wherever it was inserted itself. Filters with the same fields and ranges
// cannot both be there (fl_ht_insert_unique).
func RangeOrder(rules []*Rule) []*Rule {
	first := map[rect]int{}
	for i, r := range rules {
		if _, ok := first[r.rect()]; !ok {
			first[r.rect()] = i
		}
	}
	out := append([]*Rule(nil), rules...)
	sort.SliceStable(out, func(i, j int) bool { return first[out[i].rect()] < first[out[j].rect()] })
	return out
}

// Expand returns the entries that implement r. earlier are the rules that
// take a packet before r in its priority and mask group (RangeOrder):
// where one of them matches the same exact fields, the ports it already
// covers are left out. An nft rule's port ranges stay ranges (one entry
// each, see Entry), since nothing lends them: Blocks makes prefix blocks
// of them where a table cannot hold the range itself. A tc filter's are
// prefix blocks.
func Expand(r *Rule, earlier []*Rule) []Entry {
	if r.Source == SourceNFT {
		return expandAll(r)
	}
	return expandOne(r, earlier)
}

// expandAll expands every match of a rule that orders nothing by insertion,
// without duplicates.
func expandAll(r *Rule) []Entry {
	var out []Entry
	seen := map[Entry]bool{}
	for _, m := range append([]Match{r.Match}, r.More...) {
		one := *r
		one.Match, one.More = m, nil
		for _, e := range expandOne(&one, nil) {
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	return out
}

func expandOne(r *Rule, earlier []*Rule) []Entry {
	base := MaskKey(&r.Match.Key, &r.Match.Mask)
	if !r.HasRanges() {
		return []Entry{{Key: base, Mask: r.Match.Mask}}
	}
	if r.Source == SourceNFT {
		return []Entry{r.Match.Entry()}
	}
	rects := []rect{r.rect()}
	group := r.MaskGroup()
	for _, e := range earlier {
		if e.MaskGroup() != group || MaskKey(&e.Match.Key, &e.Match.Mask) != base {
			continue
		}
		var next []rect
		for _, x := range rects {
			next = append(next, subtract(x, e.rect())...)
		}
		rects = next
	}
	var out []Entry
	for _, x := range rects {
		srcBlocks := []portBlock{{0, 0}}
		if r.Match.SrcPortRange.Set() {
			srcBlocks = prefixBlocks(x.src.Min, x.src.Max)
		}
		dstBlocks := []portBlock{{0, 0}}
		if r.Match.DstPortRange.Set() {
			dstBlocks = prefixBlocks(x.dst.Min, x.dst.Max)
		}
		for _, s := range srcBlocks {
			for _, d := range dstBlocks {
				e := Entry{Key: base, Mask: r.Match.Mask}
				if r.Match.SrcPortRange.Set() {
					e.Key.SrcPort, e.Mask.SrcPort = HostToBE16(s.value), HostToBE16(s.mask)
				}
				if r.Match.DstPortRange.Set() {
					e.Key.DstPort, e.Mask.DstPort = HostToBE16(d.value), HostToBE16(d.mask)
				}
				out = append(out, e)
			}
		}
	}
	return out
}
