// Command xdpflow runs TC flower rules in XDP.
//
//	xdpflow enable dev DEV [mode native|generic] [flows N] [rules N] [subtables N] [cache N]
//	xdpflow disable dev DEV
//	xdpflow -K DEV flow-offload-xdp on|off     (ethtool spelling of enable/disable)
//	xdpflow -k DEV                             (show it)
//	xdpflow [-s] [-j] filter add|replace|change|del|show dev DEV ingress ...
//	xdpflow [-s] [-j] flow show dev DEV       (every rule, whatever its source)
//	xdpflow daemon [--once] [--mirror-skip-hw] [--keepalive INTERVAL|off]
//	                                           (mirror TC ingress filters and nftables netdev ingress)
//	xdpflow [-j] status
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

const usage = `usage:
  xdpflow enable dev DEV [mode native|generic] [flows N] [rules N] [subtables N] [cache N]
  xdpflow disable dev DEV
  xdpflow -K DEV flow-offload-xdp on|off
  xdpflow -k DEV
  xdpflow [-s] [-j] filter { add | replace | change | del | show } dev DEV ingress
          [pref PRIO] [handle H] [protocol PROTO] flower [MATCH...] [action ACTION...]
  xdpflow [-s] [-j] flow show dev DEV
  xdpflow daemon [--once] [--mirror-skip-hw] [--keepalive INTERVAL|off]
  xdpflow [-j] status
global options: -s (statistics) -j (JSON) --bpffs DIR (where bpffs is mounted)`

// usageError is a command line that does not parse: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type globals struct {
	stats bool
	json  bool
	bpffs string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		// One line, naming the problem.
		fmt.Fprintf(os.Stderr, "xdpflow: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	var g globals
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-s", "-stats", "--stats", "-statistics":
			g.stats = true
		case "-j", "-json", "--json":
			g.json = true
		case "-sj", "-js":
			g.stats, g.json = true, true
		case "--bpffs":
			if len(args) < 2 {
				return usageError{"--bpffs needs a directory"}
			}
			g.bpffs = args[1]
			args = args[1:]
		case "-K":
			if !privileged() {
				return errNeedsRoot
			}
			if len(args) != 4 || args[2] != "flow-offload-xdp" || (args[3] != "on" && args[3] != "off") {
				return usageError{"usage: xdpflow -K DEV flow-offload-xdp on|off"}
			}
			if args[3] == "on" {
				return cmdEnable(g, []string{"dev", args[1]})
			}
			return cmdDisable(g, []string{"dev", args[1]})
		case "-k":
			if !privileged() {
				return errNeedsRoot
			}
			if len(args) != 2 {
				return usageError{"usage: xdpflow -k DEV"}
			}
			return cmdShowFeature(g, args[1])
		case "-h", "-help", "--help":
			fmt.Println(usage)
			return nil
		default:
			return usageError{fmt.Sprintf("unknown option %q\n%s", args[0], usage)}
		}
		args = args[1:]
	}
	if len(args) == 0 {
		return usageError{usage}
	}
	if args[0] != "help" && !privileged() {
		return errNeedsRoot
	}
	switch args[0] {
	case "enable":
		return cmdEnable(g, args[1:])
	case "disable":
		return cmdDisable(g, args[1:])
	case "filter":
		return cmdFilter(g, args[1:])
	case "status":
		return cmdStatus(g, args[1:])
	case "flow":
		return cmdFlow(g, args[1:])
	case "daemon":
		return cmdDaemon(g, args[1:])
	case "help":
		fmt.Println(usage)
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q\n%s", args[0], usage)}
}
