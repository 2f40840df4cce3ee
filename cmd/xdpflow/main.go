// Command xdpflow runs TC flower rules in XDP.
//
//	xdpflow enable dev DEV [mode native|generic] [flows N] [rules N] [subtables N] [cache N]
//	xdpflow disable dev DEV
//	xdpflow -K DEV flow-offload-xdp on|off     (ethtool spelling of enable/disable)
//	xdpflow -k DEV                             (show it)
//	xdpflow [-s] [-j] filter add|replace|change|del|show dev DEV ingress ...
//	xdpflow [-force] -b FILE                   (filter commands, one per line, in one process, as tc -b)
//	xdpflow [-s] [-j] flow show dev DEV       (every rule, whatever its source)
//	xdpflow daemon [--once] [--enable DEV[,DEV...]] [--mirror-skip-hw] [--keepalive INTERVAL|off]
//	                                           (mirror TC ingress filters and nftables netdev ingress)
//	xdpflow [-j] status
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
)

const usage = `usage:
  xdpflow enable dev DEV [mode native|generic] [flows N] [rules N] [subtables N] [cache N]
  xdpflow disable dev DEV
  xdpflow -K DEV flow-offload-xdp on|off
  xdpflow -k DEV
  xdpflow [-s] [-j] filter { add | replace | change | del | show } dev DEV ingress
          [pref PRIO] [handle H] [protocol PROTO] flower [MATCH...] [action ACTION...]
  xdpflow [-force] -b FILE
  xdpflow [-s] [-j] flow show dev DEV
  xdpflow daemon [--once] [--enable DEV[,DEV...]] [--mirror-skip-hw] [--keepalive INTERVAL|off]
          [--log-format text|json] [--log-level debug|info|warn|error] [--metrics ADDR]
  xdpflow [-j] status
  xdpflow version
  xdpflow help [COMMAND]
global options: -s (statistics) -j (JSON) -p (JSON, indented) -n NETNS (in network namespace NETNS, as ip -n)
  --bpffs DIR (where bpffs is mounted) -V (version)`

// usageError is a command line that does not parse: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type globals struct {
	stats  bool
	json   bool
	pretty bool // -p: JSON indented, as bpftool's
	bpffs  string
	batch  string // -b FILE: the filter commands of FILE, in one process
	force  bool   // -force: a batch goes on past a command that fails
}

// encodeJSON writes v to standard output, indented with -p.
func (g globals) encodeJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	if g.pretty {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

func main() {
	if err := inNetns(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "xdpflow: %v\n", err)
		os.Exit(1)
	}
	if err := run(os.Args[1:]); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			// The problem on a line; where the command line has not the
			// shape of any command, the usage on the lines after. A bad
			// value is one line, naming it (COMMAND --help shows more).
			msg, more, _ := strings.Cut(ue.msg, "\n")
			fmt.Fprintf(os.Stderr, "xdpflow: %s\n", msg)
			if more != "" {
				fmt.Fprintln(os.Stderr, more)
			}
			os.Exit(2)
		}
		// One line, naming the problem.
		fmt.Fprintf(os.Stderr, "xdpflow: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
}

// commands are the words that start a command line.
var commands = []string{"enable", "disable", "filter", "flow", "daemon", "status", "version", "help"}

// usageOf is the lines of usage about command cmd.
func usageOf(cmd string) string {
	var out []string
	lines := strings.Split(usage, "\n")
	for i, l := range lines {
		if strings.Contains(l, "xdpflow ") && strings.Contains(" "+strings.Join(strings.Fields(l), " ")+" ", " "+cmd+" ") {
			out = append(out, l)
			// A continuation line is indented further.
			for j := i + 1; j < len(lines) && strings.HasPrefix(lines[j], "          "); j++ {
				out = append(out, lines[j])
			}
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "usage:\n" + strings.Join(out, "\n")
}

// version is the module's version and the commit it was built from.
func version() string {
	v := "xdpflow"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v + " (no build information)"
	}
	v += " " + bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+changes"
			}
		}
	}
	if rev != "" {
		v += " (" + rev + modified + ")"
	}
	return v + " " + bi.GoVersion
}

// outputOption sets what an output option (-s, -j, -p) asks for, and says
// whether arg is one.
func (g *globals) outputOption(arg string) bool {
	switch arg {
	case "-s", "-stats", "--stats", "-statistics":
		g.stats = true
	case "-j", "-json", "--json":
		g.json = true
	case "-sj", "-js":
		g.stats, g.json = true, true
	case "-p", "-pretty", "--pretty":
		g.json, g.pretty = true, true
	default:
		return false
	}
	return true
}

// outputOptionsAfter takes the output options that follow a command that
// only shows (status, flow show, filter show), as in `xdpflow status -j`.
// A command that changes something takes them before it only: its own
// words are not to be second-guessed.
func (g *globals) outputOptionsAfter(args []string) []string {
	shows := len(args) > 0 && (args[0] == "status" ||
		(len(args) > 1 && (args[0] == "flow" || args[0] == "filter") && slices.Contains([]string{"show", "list", "ls", "lst", "s"}, args[1])))
	if !shows {
		return args
	}
	out := args[:1:1]
	for _, a := range args[1:] {
		if !g.outputOption(a) {
			out = append(out, a)
		}
	}
	return out
}

func run(args []string) error {
	var g globals
	args, optionCommand, err := g.parseOptions(args)
	if err != nil {
		return err
	}
	if optionCommand {
		return optionCommands[args[0]](g, args)
	}
	args = g.outputOptionsAfter(args)
	if g.batch != "" {
		if len(args) > 0 {
			return usageError{fmt.Sprintf("-b FILE takes its commands from FILE: %q after it is not one", args[0])}
		}
		if !privileged() {
			return errNeedsRoot
		}
		return cmdBatch(g)
	}
	if g.force {
		return usageError{"-force goes with -b FILE"}
	}
	if len(args) == 0 {
		return usageError{usage}
	}
	if printed, err := printHelp(args); printed {
		return err
	}
	if !privileged() {
		return errNeedsRoot
	}
	return runCommand(g, args)
}

// parseOptions takes the options before the command into g and returns
// the words after them; at an option that is a command of its own
// (optionCommands) it stops, returning it and the words after it.
func (g *globals) parseOptions(args []string) (rest []string, optionCommand bool, err error) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		if g.outputOption(args[0]) {
			args = args[1:]
			continue
		}
		if _, ok := optionCommands[args[0]]; ok {
			return args, true, nil
		}
		switch args[0] {
		case "--bpffs":
			if len(args) < 2 {
				return nil, false, usageError{"--bpffs needs a directory"}
			}
			g.bpffs = args[1]
			args = args[1:]
		case "-b", "-batch", "--batch":
			if len(args) < 2 {
				return nil, false, usageError{"-b needs a file of filter commands (- for standard input)"}
			}
			g.batch = args[1]
			args = args[1:]
		case "-f", "-force", "--force":
			g.force = true
		default:
			return nil, false, usageError{fmt.Sprintf("unknown option %q\n%s", args[0], usage)}
		}
		args = args[1:]
	}
	return args, false, nil
}

// optionCommands are the options that are a command of their own, run
// with the command line from the option on.
var optionCommands = map[string]func(g globals, args []string) error{
	"-K": optionSetFeature,
	"-k": optionShowFeature,
	"-h": optionUsage, "-help": optionUsage, "--help": optionUsage,
	"-V": optionVersion, "-version": optionVersion, "--version": optionVersion,
}

// optionSetFeature: -K DEV flow-offload-xdp on|off.
func optionSetFeature(g globals, args []string) error {
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
}

// optionShowFeature: -k DEV.
func optionShowFeature(g globals, args []string) error {
	if !privileged() {
		return errNeedsRoot
	}
	if len(args) != 2 {
		return usageError{"usage: xdpflow -k DEV"}
	}
	return cmdShowFeature(g, args[1])
}

func optionUsage(globals, []string) error {
	fmt.Println(usage)
	return nil
}

func optionVersion(globals, []string) error {
	fmt.Println(version())
	return nil
}

// printHelp prints what help, version and COMMAND --help ask for, which
// need no privilege, and says whether args was one of them.
func printHelp(args []string) (printed bool, err error) {
	switch {
	case args[0] == "help" && len(args) > 1:
		if u := usageOf(args[1]); u != "" {
			fmt.Println(u)
			return true, nil
		}
		return true, usageError{fmt.Sprintf("help: no command %q\n%s", args[1], usage)}
	case args[0] == "help":
		fmt.Println(usage)
		return true, nil
	case args[0] == "version":
		fmt.Println(version())
		return true, nil
	case len(args) > 1 && (args[1] == "--help" || args[1] == "-h" || args[1] == "help") && slices.Contains(commands, args[0]):
		fmt.Println(usageOf(args[0]))
		return true, nil
	}
	return false, nil
}

// runCommand runs the command args names.
func runCommand(g globals, args []string) error {
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
	}
	return usageError{fmt.Sprintf("unknown command %q\n%s", args[0], usage)}
}
