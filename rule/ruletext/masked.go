package ruletext

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Masked values as flower spells them: a value alone when its mask covers
// the whole field, else "value/mask". These are the only spellings:
// the rule text, flower's rendering of kernel filters and nft's
// description of its entries all write masks through them.

// MaskedHex spells a number under a mask as "0xV/0xM", or "0xV" when
// mask is full (every bit of the field); digits pads both to that many
// hex digits (0: no padding).
func MaskedHex(val, mask, full uint64, digits int) string {
	if mask == full {
		return fmt.Sprintf("0x%0*x", digits, val)
	}
	return fmt.Sprintf("0x%0*x/0x%0*x", digits, val, digits, mask)
}

// MaskedNumber is a number under a mask as a key's value: the number
// itself (a uint64) when mask is full, else MaskedHex's "0xV/0xM".
func MaskedNumber(val, mask, full uint64, digits int) any {
	if mask == full {
		return val
	}
	return MaskedHex(val, mask, full, digits)
}

// MaskedMAC spells a MAC address under a mask: the address alone when the
// mask is all ones (or nil), else "ADDR/MASK".
func MaskedMAC(val, mask []byte) string {
	if mask == nil || allOnes(mask) {
		return net.HardwareAddr(val).String()
	}
	return net.HardwareAddr(val).String() + "/" + net.HardwareAddr(mask).String()
}

// MaskedIP spells an IP address under a mask: the address alone when the
// mask is all ones (or nil), "ADDR/LEN" for a prefix, and "ADDR/MASK" with
// the mask written as an address when it is no prefix (what a kernel
// filter may hold; parsePrefix reads it back).
func MaskedIP(ip, mask []byte) string {
	if mask == nil {
		return net.IP(ip).String()
	}
	if len(ip) == net.IPv4len && len(mask) == net.IPv6len {
		// parsePrefix's IPv4-mapped prefix ("::ffff:10.0.0.0/104"): its
		// last 4 bytes, as net.IPNet.String reads it.
		mask = mask[12:]
	}
	ones, bits := net.IPMask(mask).Size()
	switch {
	case bits == 0:
		return net.IP(ip).String() + "/" + net.IP(mask).String()
	case ones == bits:
		return net.IP(ip).String()
	}
	return fmt.Sprintf("%s/%d", net.IP(ip), ones)
}

func allOnes(b []byte) bool {
	for _, x := range b {
		if x != 0xff {
			return false
		}
	}
	return true
}

// parseMaskedUint parses "V" or "V/M" (each up to full); the mask is full
// when not given.
func parseMaskedUint(s string, full uint64) (val, mask uint64, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	val, err = strconv.ParseUint(vs, 0, 64)
	if err != nil || val > full {
		return 0, 0, fmt.Errorf("invalid value %q", s)
	}
	mask = full
	if hasMask {
		mask, err = strconv.ParseUint(ms, 0, 64)
		if err != nil || mask > full {
			return 0, 0, fmt.Errorf("invalid mask %q", s)
		}
	}
	return val, mask, nil
}

func parseMaskedU8(s string) (uint8, uint8, error) {
	v, m, err := parseMaskedUint(s, 0xFF)
	return uint8(v), uint8(m), err
}

// parseMaskedMAC parses "MAC", "MAC/LEN" or "MAC/MASK"; the value comes
// back masked.
func parseMaskedMAC(s string) (val, mask net.HardwareAddr, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	val, err = net.ParseMAC(vs)
	if err != nil || len(val) != 6 {
		return nil, nil, fmt.Errorf("invalid MAC address %q", vs)
	}
	mask = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if hasMask {
		if n, perr := strconv.Atoi(ms); perr == nil {
			if n < 0 || n > 48 {
				return nil, nil, fmt.Errorf("invalid MAC prefix length %q", ms)
			}
			mask = make(net.HardwareAddr, 6)
			for i := 0; i < n; i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
		} else if mask, err = net.ParseMAC(ms); err != nil || len(mask) != 6 {
			return nil, nil, fmt.Errorf("invalid MAC mask %q", ms)
		}
	}
	for i := range val {
		val[i] &= mask[i]
	}
	return val, mask, nil
}

// parsePrefix parses "ADDR", "ADDR/LEN" or "ADDR/MASK"; an IPv4 address
// comes back in 4 bytes.
func parsePrefix(s string) (*net.IPNet, error) {
	if !strings.Contains(s, "/") {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("invalid address %q", s)
		}
		bitsLen := 128
		if ip.To4() != nil {
			ip, bitsLen = ip.To4(), 32
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bitsLen, bitsLen)}, nil
	}
	_, ipn, err := net.ParseCIDR(s)
	if err != nil {
		// ADDR/MASK with the mask written as an address: what a kernel
		// filter may hold that is no prefix.
		as, ms, _ := strings.Cut(s, "/")
		ip, mask := net.ParseIP(as), net.ParseIP(ms)
		if ip == nil || mask == nil || (ip.To4() == nil) != (mask.To4() == nil) {
			return nil, fmt.Errorf("invalid prefix %q", s)
		}
		if ip.To4() != nil {
			ip, mask = ip.To4(), mask.To4()
		}
		m := net.IPMask(mask)
		return &net.IPNet{IP: ip.Mask(m), Mask: m}, nil
	}
	if ipn.IP.To4() != nil {
		ipn.IP = ipn.IP.To4()
	}
	return ipn, nil
}

// tcPrefix refuses what tc's get_prefix does and a kernel filter may
// still hold: a mask that is no prefix, or an IPv6 mask written as an
// address (iproute2's get_netmask reads dotted IPv4 masks only).
func tcPrefix(s string, n *net.IPNet) error {
	_, bitsLen := n.Mask.Size()
	_, ms, _ := strings.Cut(s, "/")
	if bitsLen == 0 || strings.Contains(ms, ":") {
		return fmt.Errorf("%q: inet prefix is expected (ADDR/LEN, or an IPv4 mask of contiguous ones)", s)
	}
	return nil
}
