package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// TestDaemonLog: text lines keep the daemon's format, JSON lines are
// records with a level, debug lines only at debug level, and an error
// repeated within a minute is logged once, its count said the next time.
func TestDaemonLog(t *testing.T) {
	var b bytes.Buffer
	l, err := NewLog(&b, "text", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	l.Printf("b0: tc (once): %d filters", 3)
	l.Debugf("not shown")
	for i := 0; i < 5; i++ {
		l.Errorf("b0: nft: read: %s", "boom")
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "xdpflow daemon: ") || !strings.HasSuffix(lines[0], " b0: tc (once): 3 filters") ||
		!strings.HasSuffix(lines[1], " ERROR: b0: nft: read: boom") {
		t.Fatalf("text lines:\n%s", b.String())
	}
	// The count comes with the next one after the window.
	l.recent["b0: nft: read: boom"].last = l.recent["b0: nft: read: boom"].last.Add(-repeatWindow)
	l.Errorf("b0: nft: read: %s", "boom")
	if !strings.Contains(b.String(), "boom (and 4 times more in the last 1m0s)") {
		t.Errorf("no repeat count:\n%s", b.String())
	}

	b.Reset()
	if l, err = NewLog(&b, "json", slog.LevelDebug); err != nil {
		t.Fatal(err)
	}
	l.Debugf("detail")
	l.Errorf("failed")
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 2 || recs[0]["level"] != "DEBUG" || recs[1]["level"] != "ERROR" || recs[1]["msg"] != "failed" {
		t.Fatalf("json records: %v", recs)
	}
	if _, err := NewLog(&b, "yaml", slog.LevelInfo); err == nil {
		t.Error("log format yaml accepted")
	}
}
