package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Log is the daemon's logging: info for what it does (a sync that
// changed something, a device renamed), errors for what failed, each
// error line at most once a minute while it repeats (a read retried every
// second would say the same thing sixty times), then how often it did.
type Log struct {
	l *slog.Logger

	mu     sync.Mutex
	recent map[string]*repeat
}

type repeat struct {
	last   time.Time
	missed int
}

// repeatWindow is how long an error line stays quiet after it is logged.
const repeatWindow = time.Minute

// NewLog logs to w as format ("text": "xdpflow daemon: TIME MSG"
// lines, "json": slog's JSON records) from level on.
func NewLog(w io.Writer, format string, level slog.Level) (*Log, error) {
	var h slog.Handler
	switch format {
	case "text", "":
		h = &lineHandler{w: w, level: level}
	case "json":
		h = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	default:
		return nil, fmt.Errorf("log format %q: text or json", format)
	}
	return &Log{l: slog.New(h), recent: map[string]*repeat{}}, nil
}

// Printf logs at info level (what the daemon did).
func (d *Log) Printf(format string, a ...any) { d.l.Info(fmt.Sprintf(format, a...)) }

// Debugf logs at debug level (the detail of each change).
func (d *Log) Debugf(format string, a ...any) { d.l.Debug(fmt.Sprintf(format, a...)) }

// Errorf logs at error level, quiet for a while after the same line.
func (d *Log) Errorf(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	now := time.Now()
	d.mu.Lock()
	r := d.recent[msg]
	if r != nil && now.Sub(r.last) < repeatWindow {
		r.missed++
		d.mu.Unlock()
		return
	}
	missed := 0
	if r != nil {
		missed = r.missed
	}
	d.recent[msg] = &repeat{last: now}
	for k, v := range d.recent {
		if now.Sub(v.last) > repeatWindow && v.missed == 0 {
			delete(d.recent, k)
		}
	}
	d.mu.Unlock()
	if missed > 0 {
		msg = fmt.Sprintf("%s (and %d times more in the last %s)", msg, missed, repeatWindow)
	}
	d.l.Error(msg)
}

// Writer is a writer of info lines, for what writes text (RemoveStaleNamespaces).
func (d *Log) Writer() io.Writer {
	return slogWriter{d.l}
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	msg := string(b)
	for len(msg) > 0 && msg[len(msg)-1] == '\n' {
		msg = msg[:len(msg)-1]
	}
	w.l.Info(msg)
	return len(b), nil
}

// lineHandler writes the daemon's classic lines: "xdpflow daemon:
// 15:04:05.000000 MSG", with the level named when it is not info.
type lineHandler struct {
	mu    sync.Mutex
	w     io.Writer
	level slog.Level
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	lvl := ""
	if r.Level != slog.LevelInfo {
		lvl = r.Level.String() + ": "
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := fmt.Fprintf(h.w, "xdpflow daemon: %s %s%s\n", r.Time.Format("15:04:05.000000"), lvl, r.Message)
	return err
}

func (h *lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineHandler) WithGroup(string) slog.Handler      { return h }

// discardLog logs nothing: for tests and benchmarks.
func discardLog() *Log {
	l, _ := NewLog(io.Discard, "text", slog.LevelError+1)
	return l
}
