package daemon

import (
	"testing"

	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
)

// enable enables dev in the current network namespace for a test, with
// opts, and disables it when fn returns.
func enable(t testing.TB, dev string, opts loader.Options, fn func(p loader.Paths)) {
	t.Helper()
	p, err := loader.NewPaths("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loader.Enable(p, dev, opts); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := loader.Disable(p, dev); err != nil {
			t.Error(err)
		}
	}()
	fn(p)
}

// syncedDaemon is a daemon of the caller's network namespace after its
// first full sync.
func syncedDaemon(tb testing.TB) *daemon {
	tb.Helper()
	d := &daemon{log: discardLog(), policy: maps.DefaultPolicy}
	d.mu.Lock()
	err := d.syncAll("start")
	d.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	return d
}
