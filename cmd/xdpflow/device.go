package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/xdpflow/xdpflow/internal/daemon"
	"github.com/xdpflow/xdpflow/internal/offload"
	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
)

// session is one command's view of a device: its pins, its table, and the
// namespace lock held while it runs.
type session struct {
	paths  loader.Paths
	dev    *loader.Device
	table  *maps.Table
	unlock func()
}

func (s *session) close() {
	if s.dev != nil {
		s.dev.Close()
	}
	if s.unlock != nil {
		s.unlock()
	}
}

func openPaths(g globals) (loader.Paths, func(), error) {
	p, err := loader.NewPaths(g.bpffs)
	if err != nil {
		return p, nil, err
	}
	unlock, err := p.Lock()
	if err != nil {
		return p, nil, err
	}
	// A device renamed since it was enabled is found under its new name.
	if _, err := loader.FollowRenames(p); err != nil {
		unlock()
		return p, nil, err
	}
	return p, unlock, nil
}

// openDevice opens an enabled device and its table, holding the lock.
func openDevice(g globals, dev string) (*session, error) {
	p, unlock, err := openPaths(g)
	if err != nil {
		return nil, err
	}
	s, err := openEnabled(p, dev)
	if err != nil {
		unlock()
		return nil, err
	}
	s.unlock = unlock
	return s, nil
}

// openEnabled opens an enabled device and its table in p, whose lock the
// caller holds.
func openEnabled(p loader.Paths, dev string) (*session, error) {
	d, t, err := offload.Open(p, dev)
	if err != nil {
		return nil, err
	}
	return &session{paths: p, dev: d, table: t}, nil
}

func parseDevArg(args []string, cmd string) (string, []string, error) {
	if len(args) < 2 || args[0] != "dev" {
		return "", nil, usageError{fmt.Sprintf("usage: xdpflow %s dev DEV", cmd)}
	}
	return args[1], args[2:], nil
}

func cmdEnable(g globals, args []string) error {
	dev, rest, err := parseDevArg(args, "enable")
	if err != nil {
		return err
	}
	opts := loader.DefaultOptions
	given := map[string]bool{}
	for i := 0; i < len(rest); i += 2 {
		if i+1 >= len(rest) {
			return usageError{fmt.Sprintf("enable: %q needs a value", rest[i])}
		}
		v := rest[i+1]
		n, nerr := strconv.ParseUint(v, 0, 32)
		switch rest[i] {
		case "mode":
			opts.Mode = loader.Mode(v)
			if opts.Mode != loader.ModeNative && opts.Mode != loader.ModeGeneric {
				return usageError{fmt.Sprintf("enable: unknown mode %q (native or generic)", v)}
			}
			given["mode"] = true
			continue
		case "flows", "rules", "subtables", "cache":
		default:
			return usageError{fmt.Sprintf("enable: unknown option %q", rest[i])}
		}
		given[rest[i]] = true
		if nerr != nil || n == 0 {
			return usageError{fmt.Sprintf("enable: invalid %s %q", rest[i], v)}
		}
		switch rest[i] {
		case "flows":
			opts.MaxFlows = uint32(n)
		case "rules":
			opts.MaxRules = uint32(n) + 1 // slot 0 is never a rule
		case "subtables":
			opts.MaxSubtables = int(n)
		case "cache":
			opts.CacheEntries = int(n)
		}
	}
	p, unlock, err := openPaths(g)
	if err != nil {
		return err
	}
	defer unlock()
	daemon.RemoveStaleNamespaces(p, os.Stderr)
	enabled, err := loader.Enable(p, dev, opts)
	if err != nil {
		return err
	}
	if !enabled {
		if err := sameOptions(p, dev, opts, given); err != nil {
			return err
		}
		fmt.Printf("xdpflow already enabled on %s\n", dev)
	}
	return nil
}

// sameOptions refuses, on a device enabled already, options given that
// differ from what it was enabled with: they would be silently ignored.
func sameOptions(p loader.Paths, dev string, opts loader.Options, given map[string]bool) error {
	d, err := loader.Open(p, dev)
	if err != nil {
		return err
	}
	defer d.Close()
	t, err := maps.Open(&d.Maps, offload.RuleParser(dev))
	if err != nil {
		return err
	}
	sz := t.Sizes()
	_, mode := d.Attached()
	have := map[string]string{
		"mode": string(mode), "flows": fmt.Sprint(sz.MaxFlows), "rules": fmt.Sprint(sz.MaxRules - 1),
		"subtables": fmt.Sprint(sz.MaxSubtables), "cache": fmt.Sprint(sz.CacheEntries),
	}
	want := map[string]string{
		"mode": string(opts.Mode), "flows": fmt.Sprint(opts.MaxFlows), "rules": fmt.Sprint(opts.MaxRules - 1),
		"subtables": fmt.Sprint(opts.MaxSubtables), "cache": fmt.Sprint(opts.CacheEntries),
	}
	var differ []string
	for _, k := range []string{"mode", "flows", "rules", "subtables", "cache"} {
		if given[k] && have[k] != want[k] {
			differ = append(differ, fmt.Sprintf("%s %s (asked %s)", k, have[k], want[k]))
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("enable %s: enabled already with %s; to change them, disable and enable it again "+
			"(a running daemon mirrors its rules again)", dev, strings.Join(differ, ", "))
	}
	return nil
}

func cmdDisable(g globals, args []string) error {
	dev, rest, err := parseDevArg(args, "disable")
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("disable: unexpected %q", rest[0])}
	}
	p, unlock, err := openPaths(g)
	if err != nil {
		return err
	}
	defer unlock()
	if err := loader.Disable(p, dev); err != nil {
		if errors.Is(err, loader.ErrNotEnabled) {
			return fmt.Errorf("disable %s: xdpflow is not enabled on it", dev)
		}
		return err
	}
	return p.RemoveIfEmpty()
}

func cmdShowFeature(g globals, dev string) error {
	p, unlock, err := openPaths(g)
	if err != nil {
		return err
	}
	defer unlock()
	state := "off"
	if d, err := loader.Open(p, dev); err == nil {
		if ok, _ := d.Attached(); ok {
			state = "on"
		} else {
			state = "off [stale: pinned but not attached]"
		}
		d.Close()
	} else if !errors.Is(err, loader.ErrNotEnabled) {
		return err
	}
	fmt.Printf("Features for %s:\nflow-offload-xdp: %s\n", dev, state)
	return nil
}

// deviceStatus is one device in `xdpflow status`.
type deviceStatus struct {
	Dev          string `json:"dev"`
	Ifindex      int    `json:"ifindex"`
	Attached     bool   `json:"attached"`
	Mode         string `json:"mode"`
	ProgramID    uint32 `json:"program_id"`
	Pins         string `json:"pins"`
	Rules        int    `json:"rules"`
	MaxRules     int    `json:"max_rules"`
	Flows        int    `json:"flows"`
	MaxFlows     int    `json:"max_flows"`
	Subtables    int    `json:"subtables"`
	MaxSubtables int    `json:"max_subtables"`
	// The flow cache's key: the words of the key the rules' masks cover
	// (two entries per set), or 0 for the whole key (one per set).
	CacheKeyWords int               `json:"cache_key_words"`
	CacheEntries  int               `json:"cache_entries_per_cpu"`
	Counters      map[string]uint64 `json:"counters"`
	// Hooks: what else runs on the device's ingress and its redirect
	// targets' egress, and what xdpflow does about each.
	Hooks []offload.HookStatus `json:"hooks"`
	// VLANMeta: the program reads where the driver holds a frame's VLAN
	// tag, and leaves frames tagged outside them to the kernel.
	VLANMeta bool `json:"vlan_meta"`
	// Mirror: how TC's filters are mirrored (the last daemon's options).
	Mirror struct {
		KeepaliveMs  int64 `json:"keepalive_ms"` // 0: off
		MirrorSkipHW bool  `json:"mirror_skip_hw"`
	} `json:"mirror"`
	// Held: why rules the kernel holds are not in XDP now, device-wide.
	Held []string `json:"held"`
	// Daemon: the network namespace's daemon, as it answers; null when
	// none runs.
	Daemon *daemon.Health `json:"daemon"`
}

// hostPath shows a pin path as the host sees it, not as reached from inside
// `ip netns exec` through /proc/PID/root.
func hostPath(p string) string {
	if strings.HasPrefix(p, "/proc/") {
		if i := strings.Index(p, "/root/"); i > 0 {
			return p[i+len("/root"):]
		}
	}
	return p
}

func cmdStatus(g globals, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Sprintf("status: unexpected %q", args[0])}
	}
	p, devs, err := statusDevices(g)
	if err != nil {
		return err
	}
	out := []deviceStatus{}
	health, herr := daemon.Ask()
	if herr != nil {
		health = nil
	}
	for _, dev := range devs {
		ds, err := readStatus(g, dev, health)
		if err != nil {
			return err
		}
		out = append(out, ds)
	}
	if g.json {
		return g.encodeJSON(out)
	}
	if len(out) == 0 {
		fmt.Printf("xdpflow: no device enabled in network namespace %s\n", p.Netns)
		return nil
	}
	printDaemonStatus(health)
	for _, d := range out {
		printDeviceStatus(d)
	}
	return nil
}

// statusDevices lists the enabled devices, removing the pins of network
// namespaces that are gone first.
func statusDevices(g globals) (loader.Paths, []string, error) {
	// Read-only but for the pins of namespaces that are gone: nothing is
	// created for a namespace without pins.
	p, err := loader.NewPaths(g.bpffs)
	if err != nil {
		return p, nil, err
	}
	daemon.RemoveStaleNamespaces(p, os.Stderr)
	unlock, _, err := p.LockIfExists()
	if err != nil {
		return p, nil, err
	}
	devs, err := loader.List(p)
	unlock()
	return p, devs, err
}

// readStatus reads one enabled device's status.
func readStatus(g globals, dev string, health *daemon.Health) (deviceStatus, error) {
	s, err := openDevice(g, dev)
	if err != nil {
		return deviceStatus{}, err
	}
	defer s.close()
	attached, mode := s.dev.Attached()
	sz := s.table.Sizes()
	cnt, err := s.table.Counters()
	if err != nil {
		return deviceStatus{}, err
	}
	ds := deviceStatus{Dev: dev, Ifindex: s.dev.Ifindex, Attached: attached, Mode: string(mode),
		ProgramID: s.dev.ProgramID(), Pins: hostPath(s.dev.Dir), Rules: sz.Rules, MaxRules: sz.MaxRules - 1,
		Flows: sz.Flows, MaxFlows: sz.MaxFlows, Subtables: sz.Subtables, MaxSubtables: sz.MaxSubtables,
		CacheKeyWords: sz.CacheKeyWords, CacheEntries: sz.CacheEntries, Counters: map[string]uint64{}}
	for i, name := range maps.CounterNames {
		ds.Counters[name] = cnt[i]
	}
	ds.Hooks, ds.Held = offload.Hooks(s.table, s.dev.Name, s.dev.Ifindex)
	ds.VLANMeta = loader.ReadsVLANMeta(s.dev.Ifindex)
	pol, err := s.dev.Policy()
	if err != nil {
		return deviceStatus{}, err
	}
	ds.Mirror.KeepaliveMs, ds.Mirror.MirrorSkipHW = pol.Keepalive.Milliseconds(), pol.MirrorSkipHW
	ds.Daemon = health
	if ds.Hooks == nil {
		ds.Hooks = []offload.HookStatus{}
	}
	if ds.Held == nil {
		ds.Held = []string{}
	}
	return ds, nil
}

// printDaemonStatus prints the network namespace's daemon's line.
func printDaemonStatus(health *daemon.Health) {
	switch {
	case health == nil:
		fmt.Printf("daemon: not running in this network namespace (TC and nft changes are not followed)\n")
	case health.LastError != "":
		fmt.Printf("daemon: pid %d, up %s, last sync %s; last error %s: %s\n", health.PID, time.Since(health.Started).Truncate(time.Second),
			ago(health.LastSync), ago(health.ErrorTime), health.LastError)
	default:
		fmt.Printf("daemon: pid %d, up %s, last sync %s\n", health.PID, time.Since(health.Started).Truncate(time.Second), ago(health.LastSync))
	}
}

// printDeviceStatus prints one device's status.
func printDeviceStatus(d deviceStatus) {
	att := "attached"
	if !d.Attached {
		att = "NOT ATTACHED (stale pins; run disable)"
	}
	fmt.Printf("%s (ifindex %d): %s, mode %s, program id %d\n", d.Dev, d.Ifindex, att, d.Mode, d.ProgramID)
	fmt.Printf("  rules %d/%d  flows %d/%d  subtables %d/%d\n", d.Rules, d.MaxRules, d.Flows, d.MaxFlows, d.Subtables, d.MaxSubtables)
	c := d.Counters
	fmt.Printf("  packets %d  hits %d  misses %d  unparsed %d  drop %d  pass %d  tx %d  redirect %d  action errors %d\n",
		c["rx"], c["hits"], c["misses"], c["unparsed"], c["drop"], c["pass"], c["tx"], c["redirect"], c["action_errors"])
	key := fmt.Sprintf("the whole key: %d entries per CPU, each taking two", d.CacheEntries)
	if d.CacheKeyWords > 0 {
		key = fmt.Sprintf("%d key words: %d entries per CPU", d.CacheKeyWords, d.CacheEntries)
	}
	fmt.Printf("  flow cache hits %d (keyed by %s)  subtable lookups %d\n", c["cache_hits"], key, c["subtable_lookups"])
	fmt.Printf("  pins %s\n", d.Pins)
	keepalive, skipHW := "off", "left to TC"
	if d.Mirror.KeepaliveMs > 0 {
		keepalive = (time.Duration(d.Mirror.KeepaliveMs) * time.Millisecond).String()
	}
	if d.Mirror.MirrorSkipHW {
		skipHW = "mirrored"
	}
	fmt.Printf("  TC mirror: keepalive %s, skip_hw filters %s\n", keepalive, skipHW)
	if d.VLANMeta {
		fmt.Printf("  VLAN tags outside the frame: read from the driver; such frames go to the kernel (counted unparsed)\n")
	}
	for _, h := range d.Held {
		fmt.Printf("  HELD: %s\n", h)
	}
	for _, h := range d.Hooks {
		fmt.Printf("  %s: %s: %s\n", h.Where, h.What, h.Xdpflow)
	}
}

// ago is how long ago t was, to the second.
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Truncate(time.Second).String() + " ago"
}
