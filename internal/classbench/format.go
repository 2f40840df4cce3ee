package classbench

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Format writes rules in ClassBench's filter-set format, one per line, as
// db_generator prints them:
//
//	@src/len<TAB>dst/len<TAB>lo : hi<TAB>lo : hi<TAB>0xPP/0xMM<TAB>0x0000/0x0000<TAB>
//
// The protocol is 0x00/0x00 when wildcarded, value/0xFF otherwise; the
// flags field is always the wildcard (we generate no flags). The trailing
// tab is db_generator's too.
func Format(rules []Rule) string {
	var b strings.Builder
	for _, r := range rules {
		fmt.Fprintf(&b, "@%s/%d\t%s/%d\t%d : %d\t%d : %d\t0x%02x/0x%02X\t0x0000/0x0000\t\n",
			r.Src.Addr(), r.Src.Bits(), r.Dst.Addr(), r.Dst.Bits(),
			r.SrcPort.Lo, r.SrcPort.Hi, r.DstPort.Lo, r.DstPort.Hi,
			r.Proto, r.ProtoMask)
	}
	return b.String()
}

// ParseRules reads a filter set in ClassBench's format, such as Format or
// db_generator writes. Flags and any extra fields after the protocol are
// ignored (Rule has no room for them), so a flag-qualified filter reads back
// as matching every flag value. Host bits of the prefixes, and protocol
// bits outside the protocol mask, are cleared.
func ParseRules(r io.Reader) ([]Rule, error) {
	var rules []Rule
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		rule, err := parseRule(text)
		if err != nil {
			return nil, fmt.Errorf("classbench rules: line %d: %v", line, err)
		}
		rules = append(rules, rule)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("classbench rules: %v", err)
	}
	return rules, nil
}

func parseRule(text string) (Rule, error) {
	var r Rule
	body, ok := strings.CutPrefix(text, "@")
	if !ok {
		return r, fmt.Errorf("a rule starts with @")
	}
	// Spaces around the colons are optional.
	f := strings.Fields(strings.ReplaceAll(body, ":", " : "))
	if len(f) < 9 || f[3] != ":" || f[6] != ":" {
		return r, fmt.Errorf("want src dst lo : hi lo : hi proto, have %.60q", text)
	}
	var err error
	if r.Src, err = parsePrefix4(f[0]); err != nil {
		return r, err
	}
	if r.Dst, err = parsePrefix4(f[1]); err != nil {
		return r, err
	}
	if r.SrcPort, err = parsePorts(f[2], f[4]); err != nil {
		return r, err
	}
	if r.DstPort, err = parsePorts(f[5], f[7]); err != nil {
		return r, err
	}
	v, m, ok := strings.Cut(f[8], "/")
	pv, err1 := strconv.ParseUint(v, 0, 8)
	pm, err2 := strconv.ParseUint(m, 0, 8)
	if !ok || err1 != nil || err2 != nil {
		return r, fmt.Errorf("bad protocol %q", f[8])
	}
	r.Proto, r.ProtoMask = uint8(pv&pm), uint8(pm)
	return r, nil
}

func parsePrefix4(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("bad IPv4 prefix %q", s)
	}
	return p.Masked(), nil
}

func parsePorts(lo, hi string) (PortRange, error) {
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l > h {
		return PortRange{}, fmt.Errorf("bad port range %s : %s", lo, hi)
	}
	return PortRange{uint16(l), uint16(h)}, nil
}
