package flower

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"

	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// peditParams encodes a as act_pedit options and reads them back as the
// kernel decoder sees them.
func peditParams(t *testing.T, a rule.Action) map[uint16][]byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	if err := encodePedit(a, ae); err != nil {
		t.Fatal(err)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	params := map[uint16][]byte{}
	for ad.Next() {
		params[ad.Type()] = ad.Bytes()
	}
	return params
}

func pipeControl(p []byte) (string, error) {
	return controlWord(int32(binary.NativeEndian.Uint32(p[8:])))
}

// TestPeditRoundTrip: what xdpflow writes into TC for an address rewrite
// reads back as the same action, and edits xdpflow cannot run are refused.
func TestPeditRoundTrip(t *testing.T) {
	mac, _ := net.ParseMAC("02:11:22:33:44:55")
	for _, k := range []rule.ActionKind{rule.ActSetEthDst, rule.ActSetEthSrc} {
		a := rule.Action{Kind: k, MAC: mac}
		params := peditParams(t, a)
		words, err := decodePedit(params, pipeControl)
		if err != nil {
			t.Fatalf("%s: decode: %v", ruletext.FormatAction(a), err)
		}
		acts, err := ruletext.ParseActions(append([]string{"action"}, words...))
		if err != nil {
			t.Fatalf("%s: parse %q: %v", ruletext.FormatAction(a), words, err)
		}
		if len(acts) != 1 || acts[0].Kind != k || acts[0].MAC.String() != mac.String() {
			t.Errorf("%s: read back as %q = %+v", ruletext.FormatAction(a), strings.Join(words, " "), acts)
		}

		// One mask byte that keeps half a byte: a bit-level edit.
		p := append([]byte(nil), params[tcaPeditParmsEx]...)
		p[peditKeysStart] = 0x0F
		params[tcaPeditParmsEx] = p
		if _, err := decodePedit(params, pipeControl); err == nil {
			t.Errorf("%s with a bit-level mask: accepted", ruletext.FormatAction(a))
		}
	}
}
