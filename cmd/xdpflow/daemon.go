package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/xdpflow/xdpflow/internal/daemon"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// cmdDaemon mirrors the kernel's rules into XDP on every enabled device of
// this network namespace and keeps them mirrored: nftables netdev ingress
// chains (NFNLGRP_NFTABLES) and TC filters on ingress (RTNLGRP_TC). All of its state is the
// pinned tables, so it can be killed at any moment; a new one reconciles.
func cmdDaemon(g globals, args []string) error {
	once, skipHW := false, false
	keepalive := maps.DefaultPolicy.Keepalive
	logFormat, logLevel := "text", slog.LevelInfo
	metricsAddr := ""
	var enable []string
	const usage = "usage: xdpflow daemon [--once] [--enable DEV[,DEV...]] [--mirror-skip-hw] [--keepalive INTERVAL|off] [--log-format text|json] [--log-level debug|info|warn|error] [--metrics ADDR]"
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "--once", "once":
			once = true
		case "--enable":
			if i+1 >= len(args) {
				return usageError{"daemon: --enable needs devices (eth0,eth1); " + usage}
			}
			i++
			for _, dev := range strings.Split(args[i], ",") {
				if dev != "" {
					enable = append(enable, dev)
				}
			}
		case "--metrics":
			if i+1 >= len(args) {
				return usageError{"daemon: --metrics needs an address (127.0.0.1:9560); " + usage}
			}
			i++
			metricsAddr = args[i]
		case "--log-format", "--log-level":
			if i+1 >= len(args) {
				return usageError{fmt.Sprintf("daemon: %s needs a value; %s", a, usage)}
			}
			i++
			if a == "--log-format" {
				logFormat = args[i]
			} else if err := logLevel.UnmarshalText([]byte(args[i])); err != nil {
				return usageError{fmt.Sprintf("daemon: --log-level %q: debug, info, warn or error", args[i])}
			}
		case "--mirror-skip-hw":
			skipHW = true
		case "--keepalive":
			if i+1 >= len(args) {
				return usageError{"daemon: --keepalive needs an interval (1s, 500ms) or off; " + usage}
			}
			i++
			if args[i] == "off" || args[i] == "0" {
				keepalive = 0
				break
			}
			var err error
			if keepalive, err = ruletext.ParseKeepalive(args[i]); err != nil {
				return usageError{fmt.Sprintf("daemon: --keepalive: %v, or off", err)}
			}
		default:
			return usageError{fmt.Sprintf("daemon: unexpected %q (%s)", a, usage)}
		}
	}
	lg, err := daemon.NewLog(os.Stderr, logFormat, logLevel)
	if err != nil {
		return usageError{"daemon: " + err.Error()}
	}
	cfg := daemon.Config{BPFFS: g.bpffs, Log: lg, Policy: maps.Policy{Keepalive: keepalive, MirrorSkipHW: skipHW},
		Enable: enable, MetricsAddr: metricsAddr}
	if once {
		return daemon.Once(cfg)
	}
	return daemon.Run(cfg)
}
