package maps_test

import (
	"fmt"
	"testing"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// TestSpansSkipSubtables: 32 filters of 32 masks, each on its own
// destination /24, and a last filter for everything. A packet to none of
// the /24s is looked up in the last filter's subtable alone, one to a /24
// in that filter's subtable alone, and verdicts stay the model's while a
// subtable's spans widen (a filter of the same mask elsewhere: its range
// holds the addresses between, its rows only the two /24s' third bytes),
// a filter goes and the table is opened again. Every subtable of one flow is
// listed with a copy of it, and only those.
func TestSpansSkipSubtables(t *testing.T) {
	ns := testutil.NewNetns(t)
	testutil.Veth(t, ns, "r1", ns, "r2")
	ns.Run(t, func() {
		h := newHarnessCache(t, 1, 1<<16, false)
		for i := 0; i < 32; i++ {
			// Masks told apart by ip_ttl's (the frames' TTL is 64), not by
			// prefix lengths, which would share merged subtables.
			h.install(uint16(i+1), 1, fmt.Sprintf("protocol ip flower ip_proto udp dst_ip 198.19.%d.0/24 ip_ttl 0x40/0x%02x action drop", i, 0x40|i))
		}
		h.install(100, 1, "protocol ip flower action pass")
		if n := len(h.table.SubtableBounds()); n != 33 {
			t.Fatalf("33 masks take %d subtables", n)
		}
		var frames [][]byte
		for d := 0; d < 256; d += 5 {
			frames = append(frames, udpFrame(fmt.Sprintf("198.19.%d.7", d), 9))
		}
		h.check(frames)
		wantInlined := func(want, listed int) {
			t.Helper()
			n, l, err := h.table.InlinedSubtables()
			if err != nil {
				t.Fatal(err)
			}
			if n != want || l != listed {
				t.Errorf("%d of %d subtables listed with their flow, want %d of %d", n, l, want, listed)
			}
		}
		wantInlined(33, 33)
		wantLookups := func(dst string, want uint64) {
			t.Helper()
			before := lookups(t, h)
			h.check([][]byte{udpFrame(dst, 9)})
			if n := lookups(t, h) - before; n != want {
				t.Errorf("a packet to %s took %d lookups, want %d", dst, n, want)
			}
		}
		wantLookups("198.19.200.1", 1)
		wantLookups("198.19.5.1", 1)
		wantLookups("10.0.0.1", 1)

		// Pref 1's mask gains a flow at 198.19.100.0/24: its spans
		// cover 198.19.0.0-198.19.100.255 now, its third-byte rows 0
		// and 100.
		h.install(200, 1, "protocol ip flower ip_proto udp dst_ip 198.19.100.0/24 ip_ttl 0x40/0x40 action drop")
		h.check(frames)
		wantLookups("198.19.50.1", 1)
		wantLookups("198.19.100.1", 2) // pref 200's hit cannot stop the search before pref 100's
		wantLookups("198.19.101.1", 1)
		wantInlined(32, 33)

		h.remove(6, 1)
		h.check(frames)
		wantLookups("198.19.5.1", 1)
		wantInlined(31, 32)

		// Spans stay as wide while the table is open; opened again, they
		// are the flows' own, listed with the next change that lists.
		h.remove(200, 1)
		h.check(frames)
		wantInlined(32, 32)
		wantLookups("198.19.100.1", 2)
		h.reopen()
		h.install(300, 1, "protocol ip flower ip_proto tcp action drop")
		h.check(frames)
		wantLookups("198.19.100.1", 1)

		// Two flows far apart: their subtable's range holds
		// 10.1.0.0-200.1.255.255, its top bytes only 10 and 200 and
		// its second bytes only 1, so the packets of the other top or
		// second bytes do not look in it.
		h.install(50, 1, "protocol ip flower ip_proto udp dst_ip 10.1.0.0/16 action drop")
		h.install(50, 2, "protocol ip flower ip_proto udp dst_ip 200.1.0.0/16 action drop")
		h.check(append(frames, udpFrame("10.1.2.3", 9), udpFrame("200.1.2.3", 9), udpFrame("100.1.2.3", 9)))
		wantLookups("100.1.2.3", 1)
		wantLookups("198.19.50.1", 1)
		wantLookups("10.1.2.3", 1)
		wantLookups("200.2.0.1", 1)
		wantLookups("10.2.0.1", 1)
		wantLookups("100.1.2.3", 1)
		h.reopen()
		wantLookups("100.1.2.3", 1)
		wantLookups("200.1.2.3", 1)
	})
}
