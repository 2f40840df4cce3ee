package loader

import (
	"testing"

	"github.com/safchain/ethtool"

	"github.com/xdpflow/xdpflow/internal/testutil"
)

// TestReadFeaturesAsTheLibrary: readFeatures (feature names read once,
// then one ETHTOOL_GFEATURES) gives every feature of a veth as the ethtool
// library's own call does, with GRO and TX checksums each on and off.
func TestReadFeaturesAsTheLibrary(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, a, "a0", b, "b0")
	for _, cfg := range [][]string{{"gro", "on", "tx", "on"}, {"gro", "off", "tx", "off"}, {"gro", "on", "tx", "off"}} {
		a.MustExec(t, append([]string{"ethtool", "-K", "a0"}, cfg...)...)
		a.Run(t, func() {
			e, err := ethtool.NewEthtool()
			if err != nil {
				t.Fatal(err)
			}
			want, err := e.Features("a0")
			e.Close()
			if err != nil {
				t.Fatal(err)
			}
			got, err := readFeatures("a0")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%v: %d features, the library %d", cfg, len(got), len(want))
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%v: %s = %v, the library says %v", cfg, k, got[k], v)
				}
			}
			if got["rx-gro"] != (cfg[1] == "on") || got["tx-checksum-ip-generic"] != (cfg[3] == "on") {
				t.Errorf("%v: rx-gro %v, tx-checksum-ip-generic %v", cfg, got["rx-gro"], got["tx-checksum-ip-generic"])
			}
		})
	}
}
