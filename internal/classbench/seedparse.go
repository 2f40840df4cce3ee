package classbench

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// seedParser fills a Seed from the data lines of a parameter file, one
// section line at a time.
type seedParser struct {
	s         *Seed
	lines     map[string]int // data lines read per section seen so far
	protoLine []int          // file line of each Protocols entry
}

// data parses one data line f of section.
func (p *seedParser) data(section string, lineNo int, f []string) error {
	s := p.s
	switch section {
	case "-scale":
		return p.single(section, f, &s.Scale, 1)
	case "-snest":
		return p.single(section, f, &s.SrcNest, 0)
	case "-dnest":
		return p.single(section, f, &s.DstNest, 0)
	case "-flags", "-extra":
		return nil // not generated: see the package comment
	case "-prots":
		p.protoLine = append(p.protoLine, lineNo)
		return p.protocol(f)
	case "-spar":
		return appendPort(&s.SrcRanges, f)
	case "-spem":
		return appendPort(&s.SrcExact, f)
	case "-dpar":
		return appendPort(&s.DstRanges, f)
	case "-dpem":
		return appendPort(&s.DstExact, f)
	case "-sskew":
		return treeLevel(&s.SrcTree, f)
	case "-dskew":
		return treeLevel(&s.DstTree, f)
	case "-pcorr":
		return correlation(&s.Correlation, f)
	}
	for c := range PortClass(NumClasses) {
		if section == c.section() {
			return prefixPair(&s.PrefixPairs[c], f)
		}
	}
	return fmt.Errorf("no parser for section %s", section)
}

func (p *seedParser) single(section string, f []string, dst *int, min int) error {
	if p.lines[section] > 1 {
		return errors.New("more than one value")
	}
	if len(f) != 1 {
		return fmt.Errorf("want 1 value, have %d", len(f))
	}
	v, err := parseInt(f[0], min, 1<<30)
	*dst = v
	return err
}

func (p *seedParser) protocol(f []string) error {
	if len(f) != 2+NumClasses {
		return fmt.Errorf("want %d fields, have %d", 2+NumClasses, len(f))
	}
	v, err := parseInt(f[0], 0, 255)
	if err != nil {
		return err
	}
	for _, q := range p.s.Protocols {
		if int(q.Value) == v {
			return fmt.Errorf("protocol %d listed twice", v)
		}
	}
	pr := Protocol{Value: uint8(v)}
	if pr.Weight, err = parseWeight(f[1]); err != nil {
		return err
	}
	for c := range pr.Classes {
		if pr.Classes[c], err = parseWeight(f[2+c]); err != nil {
			return err
		}
	}
	p.s.Protocols = append(p.s.Protocols, pr)
	return nil
}

func appendPort(list *[]WeightedRange, f []string) error {
	if len(f) != 2 {
		return fmt.Errorf("want weight and lo:hi, have %d fields", len(f))
	}
	w, err := parseWeight(f[0])
	if err != nil {
		return err
	}
	lo, hi, ok := strings.Cut(f[1], ":")
	if !ok {
		return fmt.Errorf("bad port range %q", f[1])
	}
	l, err1 := parseInt(lo, 0, 65535)
	h, err2 := parseInt(hi, 0, 65535)
	if err := errors.Join(err1, err2); err != nil || l > h {
		return fmt.Errorf("bad port range %q", f[1])
	}
	*list = append(*list, WeightedRange{w, PortRange{uint16(l), uint16(h)}})
	return nil
}

func prefixPair(list *[]TotalLength, f []string) error {
	if len(f) < 2 {
		return fmt.Errorf("want total,weight and source,weight pairs, have %d fields", len(f))
	}
	t, w, err := lengthAndWeight(f[0], 64)
	if err != nil {
		return err
	}
	for _, have := range *list {
		if have.Total == t {
			return fmt.Errorf("total length %d listed twice", t)
		}
	}
	tl := TotalLength{Total: t, Weight: w}
	for _, tok := range f[1:] {
		l, w, err := lengthAndWeight(tok, 32)
		if err != nil {
			return err
		}
		tl.Src = append(tl.Src, LengthWeight{l, w})
	}
	*list = append(*list, tl)
	return nil
}

func treeLevel(tree *[33]TreeLevel, f []string) error {
	if len(f) != 4 {
		return fmt.Errorf("want depth and 3 fractions, have %d fields", len(f))
	}
	d, err := parseInt(f[0], 0, 32)
	if err != nil {
		return err
	}
	var v [3]float64
	for i := range v {
		if v[i], err = parseFraction(f[1+i]); err != nil {
			return err
		}
	}
	tree[d] = TreeLevel{OneChild: v[0], TwoChildren: v[1], Skew: v[2]}
	return nil
}

func correlation(corr *[33]float64, f []string) error {
	if len(f) != 2 {
		return fmt.Errorf("want depth and fraction, have %d fields", len(f))
	}
	d, err := parseInt(f[0], 0, 32)
	if err != nil {
		return err
	}
	corr[d], err = parseFraction(f[1])
	return err
}

// check makes sure every class a protocol may draw can be generated.
func (p *seedParser) check() error {
	s := p.s
	var total float64
	for i, pr := range s.Protocols {
		total += pr.Weight
		if pr.Weight == 0 {
			continue
		}
		var classes float64
		for c, w := range pr.Classes {
			if w == 0 {
				continue
			}
			classes += w
			if err := s.classUsable(PortClass(c)); err != nil {
				return &SeedError{s.Name, "-prots", p.protoLine[i], fmt.Errorf("protocol %d: %v", pr.Value, err)}
			}
		}
		if classes == 0 {
			return &SeedError{s.Name, "-prots", p.protoLine[i], fmt.Errorf("protocol %d has no port-pair class", pr.Value)}
		}
	}
	if total == 0 {
		return &SeedError{s.Name, "-prots", 0, errors.New("no protocol has a positive weight")}
	}
	return nil
}

func lengthAndWeight(tok string, maxLen int) (int, float64, error) {
	l, w, ok := strings.Cut(tok, ",")
	if !ok {
		return 0, 0, fmt.Errorf("want length,weight, have %q", tok)
	}
	n, err := parseInt(l, 0, maxLen)
	if err != nil {
		return 0, 0, err
	}
	v, err := parseWeight(w)
	return n, v, err
}

func parseInt(s string, min, max int) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v < min || v > max {
		return 0, fmt.Errorf("want an integer in [%d,%d], have %q", min, max, s)
	}
	return v, nil
}

func parseWeight(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("want a non-negative number, have %q", s)
	}
	return v, nil
}

// parseFraction reads a probability, forgiving the rounding above 1 that
// the printed seeds could carry.
func parseFraction(s string) (float64, error) {
	v, err := parseWeight(s)
	if err == nil && v > 1+1e-6 {
		err = fmt.Errorf("want a fraction in [0,1], have %q", s)
	}
	return min(v, 1), err
}
