package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// instanceSocket is the daemon's abstract unix socket. Abstract names are
// per network namespace, so holding it is being the namespace's one
// daemon (the kernel frees it when the process dies, however it dies),
// and connecting to it is asking that daemon how it is.
const instanceSocket = "@xdpflow-daemon"

// Health is what the daemon answers on its socket.
type Health struct {
	PID       int       `json:"pid"`
	Started   time.Time `json:"started"`
	LastSync  time.Time `json:"last_sync"`
	LastError string    `json:"last_error,omitempty"`
	ErrorTime time.Time `json:"last_error_time,omitempty"`
}

// instance is the daemon's hold on its socket and what it tells.
type instance struct {
	l      net.Listener
	health atomic.Pointer[Health]
}

// claimInstance takes the namespace's daemon socket, or says which
// process holds it.
func claimInstance() (*instance, error) {
	l, err := net.Listen("unix", instanceSocket)
	if errors.Is(err, syscall.EADDRINUSE) {
		if h, herr := Ask(); herr == nil {
			return nil, fmt.Errorf("daemon: another xdpflow daemon (pid %d) runs in this network namespace; stop it first", h.PID)
		}
		return nil, errors.New("daemon: another xdpflow daemon runs in this network namespace; stop it first")
	}
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	in := &instance{l: l}
	in.health.Store(&Health{PID: os.Getpid(), Started: time.Now()})
	go in.serve()
	return in, nil
}

func (in *instance) serve() {
	for {
		c, err := in.l.Accept()
		if err != nil {
			return // closed
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_ = json.NewEncoder(c).Encode(in.health.Load())
		c.Close()
	}
}

// synced records a sync's end and its error (nil: none).
func (in *instance) synced(err error) {
	if in == nil {
		return
	}
	h := *in.health.Load()
	h.LastSync = time.Now()
	if err != nil {
		h.LastError, h.ErrorTime = err.Error(), h.LastSync
	}
	in.health.Store(&h)
}

func (in *instance) close() { in.l.Close() }

// Ask asks this network namespace's daemon how it is; an error when
// none runs.
func Ask() (*Health, error) {
	c, err := net.DialTimeout("unix", instanceSocket, 200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	var h Health
	if err := json.NewDecoder(c).Decode(&h); err != nil {
		return nil, fmt.Errorf("read the daemon's answer: %w", err)
	}
	// The peer's pid from the kernel, not from what it wrote.
	if uc, ok := c.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					h.PID = int(cred.Pid)
				}
			})
		}
	}
	return &h, nil
}
