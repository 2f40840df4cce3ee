package selftests

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/xdpflow/xdpflow/bpf"
	"github.com/xdpflow/xdpflow/internal/testutil"
	"github.com/xdpflow/xdpflow/maps"
)

// TestVerifierHeadroom loads the program as enable does and fails when
// the running kernel's verifier walks more than 90% of the instructions
// it allows (1,000,000): a change that costs the verifier much more than
// it did fails here, on this kernel and in make vmtest's, before it
// fails to load for a user.
func TestVerifierHeadroom(t *testing.T) {
	testutil.RequireRoot(t)
	const limit, most = 1_000_000, 900_000
	spec, err := bpf.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	if err := maps.SizeSpec(spec, maps.DefaultCacheEntries); err != nil {
		t.Fatal(err)
	}
	if err := maps.SizeTables(spec, 1<<16, 4096); err != nil {
		t.Fatal(err)
	}
	objs := &bpf.XdpflowObjects{}
	if err := spec.LoadAndAssign(objs, &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}}); err != nil {
		t.Fatalf("load: %v", err)
	}
	defer objs.Close()
	m := regexp.MustCompile(`processed (\d+) insns`).FindStringSubmatch(objs.Xdpflow.VerifierLog)
	if m == nil {
		t.Fatalf("no instruction count in the verifier's log:\n%s", objs.Xdpflow.VerifierLog)
	}
	n, _ := strconv.Atoi(m[1])
	t.Logf("the verifier walked %d instructions of the %d it allows", n, limit)
	if n > most {
		t.Errorf("the verifier walked %d instructions, over %d of its %d: the program is close to too large for this kernel", n, most, limit)
	}
}
