package maps_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
)

// TestPrefsShareSubtables: 600 filters, each its own pref, over three
// masks (more prefs than a device has subtables) take one subtable per
// mask, and every packet meets the filter of the lowest pref that matches
// it, as the model says, while filters come and go at both ends of the
// order. The search stops once no subtable left can beat its best hit: a
// packet that a filter of the first subtable matches is looked up once.
func TestPrefsShareSubtables(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, false)
		texts := func(pref int) string {
			switch pref % 3 {
			case 0: // the widest: every UDP packet to 198.18.0.0/24
				return fmt.Sprintf("protocol ip flower dst_ip 198.18.0.0/24 ip_proto udp action %s", verdictOf(pref))
			case 1:
				return fmt.Sprintf("protocol ip flower dst_ip 198.18.0.%d ip_proto udp action %s", pref%7, verdictOf(pref))
			}
			return fmt.Sprintf("protocol ip flower dst_ip 198.18.0.%d ip_proto udp dst_port %d action %s",
				pref%7, 1000+pref%5, verdictOf(pref))
		}
		frames := make([][]byte, 0, 70)
		for d := 0; d < 7; d++ {
			for p := 0; p < 5; p++ {
				frames = append(frames, udpFrame(fmt.Sprintf("198.18.0.%d", d), uint16(1000+p)))
			}
		}
		frames = append(frames, frames...)
		installed := 0
		for pref := 10; pref < 610; pref++ {
			if h.install(uint16(pref), 1, texts(pref)) {
				installed++
			}
		}
		if installed != 600 {
			t.Fatalf("%d of 600 filters installed", installed)
		}
		if n := len(h.table.SubtableBounds()); n != 3 {
			t.Fatalf("600 filters over 3 masks take %d subtables", n)
		}
		h.check(frames)

		// A filter ahead of all (pref 1) and one at the end; then the
		// first ones go, raising bounds.
		h.install(1, 1, "protocol ip flower dst_ip 198.18.0.3 ip_proto udp dst_port 1002 action drop")
		h.install(700, 1, "protocol ip flower dst_ip 198.18.0.0/16 action pass")
		h.check(frames)
		before := lookups(t, h)
		h.check([][]byte{udpFrame("198.18.0.3", 1002)})
		if n := lookups(t, h) - before; n != 1 {
			t.Errorf("a packet of the first filter took %d lookups, want 1: the search did not stop", n)
		}
		for pref := 1; pref < 40; pref++ {
			h.remove(uint16(pref), 1)
			if pref%5 == 0 {
				h.check(frames)
			}
		}
		h.reopen()
		h.check(frames)
		if n := len(h.table.SubtableBounds()); n != 4 {
			t.Fatalf("%d subtables over four masks", n)
		}
	})
}

func verdictOf(pref int) string {
	if pref%2 == 0 {
		return "drop"
	}
	return "pass"
}

func lookups(t *testing.T, h *harness) uint64 {
	t.Helper()
	cnt, err := h.table.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return cnt[maps.CounterSubtableLookups]
}

// udpFrame is a UDP frame from 198.18.1.1 to dst.
func udpFrame(dst string, dport uint16) []byte {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	return testutil.Eth(mac, mac, nil, 0x0800, testutil.IPv4(net.IPv4(198, 18, 1, 1), net.ParseIP(dst), 17,
		testutil.IPv4Opts{}, testutil.UDP(40000, dport, make([]byte, 18))))
}
