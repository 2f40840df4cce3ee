package classbench

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"strings"
)

//go:embed seeds/*_seed
var seedFiles embed.FS

// Seeds names the ClassBench parameter files embedded in the package.
var Seeds = []string{"acl1", "fw1", "ipc1"}

// LoadSeed parses one of the embedded parameter files, named as in Seeds.
func LoadSeed(name string) (*Seed, error) {
	data, err := seedFiles.ReadFile("seeds/" + name + "_seed")
	if err != nil {
		return nil, fmt.Errorf("classbench: no embedded seed %q (have %s)", name, strings.Join(Seeds, ", "))
	}
	return ParseSeed(name, bytes.NewReader(data))
}

// Seed is a ClassBench parameter file: the statistics of one real filter
// set, which Generate reproduces at any size (tech report §4). Only the
// sections the generator uses are kept; -flags and -extra are read over
// (see the package comment in generate.go for why).
type Seed struct {
	Name string
	// Scale is the number of filters in the set the statistics come from
	// (-scale); ScaleAddresses compares the requested size with it.
	Scale int
	// Protocols is the protocol distribution, each protocol with its own
	// port-pair class distribution (-prots).
	Protocols []Protocol
	// The arbitrary ranges and exact ports of each side, with their
	// relative frequencies (-spar, -spem, -dpar, -dpem).
	SrcRanges, SrcExact, DstRanges, DstExact []WeightedRange
	// PrefixPairs holds, per port-pair class, the distribution of the
	// total prefix length (source + destination) and, for each total, of
	// the source length (-wc_wc ... -em_em).
	PrefixPairs [NumClasses][]TotalLength
	// SrcNest and DstNest bound how many prefixes of one address tree may
	// contain a single address (-snest, -dnest).
	SrcNest, DstNest int
	// SrcTree and DstTree describe, per depth 0..32, how the nodes of the
	// source and destination address trees branch (-sskew, -dskew).
	SrcTree, DstTree [33]TreeLevel
	// Correlation[l] is the probability that a destination address keeps
	// following its filter's source address at bit l, 1..32 (-pcorr).
	Correlation [33]float64
}

// Protocol is one line of -prots.
type Protocol struct {
	Value  uint8   // IP protocol number; 0 stands for the wildcard
	Weight float64 // relative frequency of the protocol
	// Classes is the relative frequency of each port-pair class among
	// the protocol's filters.
	Classes [NumClasses]float64
}

// WeightedRange is one line of a port list section.
type WeightedRange struct {
	Weight float64
	Range  PortRange
}

// TotalLength is one line of a prefix-pair section: a total prefix length,
// its frequency, and the distribution of the source prefix length for it
// (the destination length is the rest of the total).
type TotalLength struct {
	Total  int
	Weight float64
	Src    []LengthWeight
}

// LengthWeight is a prefix length with its relative frequency.
type LengthWeight struct {
	Len    int
	Weight float64
}

// TreeLevel is one depth of an address tree's shape (tech report §3.4):
// the fractions of its nodes with one child and with two children, and the
// skew of the two-child nodes, 1 - (lighter subtree / heavier subtree),
// counted in filters.
type TreeLevel struct {
	OneChild, TwoChildren, Skew float64
}

// SeedError reports a malformed parameter file.
type SeedError struct {
	Seed    string
	Section string // e.g. "-prots"; empty outside any section
	Line    int    // 1-based; 0 when the error concerns a whole section
	Err     error
}

func (e *SeedError) Error() string {
	where := ""
	switch {
	case e.Line > 0 && e.Section != "":
		where = fmt.Sprintf("line %d (%s): ", e.Line, e.Section)
	case e.Line > 0:
		where = fmt.Sprintf("line %d: ", e.Line)
	case e.Section != "":
		where = e.Section + ": "
	}
	return fmt.Sprintf("seed %s: %s%v", e.Seed, where, e.Err)
}

func (e *SeedError) Unwrap() error { return e.Err }

// sectionNames lists every section of a parameter file, in the order
// ClassBench writes them. All must be present; the order is not enforced.
func sectionNames() []string {
	names := []string{"-scale", "-prots", "-flags", "-extra", "-spar", "-spem", "-dpar", "-dpem"}
	for c := range PortClass(NumClasses) {
		names = append(names, c.section())
	}
	return append(names, "-snest", "-sskew", "-dnest", "-dskew", "-pcorr")
}

// ParseSeed reads a ClassBench parameter file. name labels errors and the
// result. Besides the syntax it checks that every port-pair class a
// protocol can draw has the prefix lengths and port lists it needs, so that
// Generate never meets a hole (db_generator would read garbage there).
func ParseSeed(name string, r io.Reader) (*Seed, error) {
	p := &seedParser{s: &Seed{Name: name}, lines: map[string]int{}}
	known := map[string]bool{}
	for _, sec := range sectionNames() {
		known[sec] = true
	}
	fail := func(section string, line int, err error) error {
		return &SeedError{Seed: name, Section: section, Line: line, Err: err}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	section, lineNo := "", 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case line == "#":
			if section == "" {
				return nil, fail("", lineNo, errors.New("# outside a section"))
			}
			section = ""
		case isSectionHeader(line):
			switch {
			case !known[line]:
				return nil, fail("", lineNo, fmt.Errorf("unknown section %s", line))
			case section != "":
				return nil, fail(section, lineNo, fmt.Errorf("%s starts before the closing #", line))
			}
			if _, seen := p.lines[line]; seen {
				return nil, fail(line, lineNo, errors.New("section repeated"))
			}
			section = line
			p.lines[section] = 0
		case section == "":
			return nil, fail("", lineNo, fmt.Errorf("data outside a section: %.40q", line))
		default:
			p.lines[section]++
			if err := p.data(section, lineNo, strings.Fields(line)); err != nil {
				return nil, fail(section, lineNo, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fail(section, lineNo, err)
	}
	if section != "" {
		return nil, fail(section, 0, errors.New("not closed by #"))
	}
	for _, sec := range sectionNames() {
		if _, ok := p.lines[sec]; !ok {
			return nil, fail(sec, 0, errors.New("section missing"))
		}
	}
	return p.s, p.check()
}

func isSectionHeader(line string) bool {
	return len(line) > 1 && line[0] == '-' && ('a' <= line[1] && line[1] <= 'z')
}
