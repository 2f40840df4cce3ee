package nft

import (
	"fmt"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Ruleset is what nftables runs at one device's ingress: the netdev base
// chains hooked there, in hook order, and what they can reach.
type Ruleset struct {
	Dev     string
	Ifindex int
	Base    []*Chain
	chains  map[string]*Chain // "table/chain", every chain of the tables involved
	sets    map[string]map[string]*setInfo
	// CheckFwd, when set, says whether XDP can redirect into a device
	// (loader.CheckXDPTarget); a fwd it refuses is punted.
	CheckFwd func(ifindex int) error
}

// Chain is one chain and its rules in order.
type Chain struct {
	Table    string
	Name     string
	Base     bool
	Priority int32
	Policy   uint32
	Rules    []*ruleInfo
	handle   uint64
	tableH   uint64
}

// Family is the nft family xdpflow mirrors.
const Family = unix.NFPROTO_NETDEV

// Reader reads rulesets over netlink sockets kept open between reads (a
// daemon reads on every change).
type Reader struct {
	nl  *netlink.Conn
	set *nftables.Conn
}

// NewReader opens the sockets, in the caller's network namespace.
func NewReader() (*Reader, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	sc, err := nftables.New(nftables.AsLasting())
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Reader{nl: c, set: sc}, nil
}

// Close closes the sockets.
func (r *Reader) Close() {
	r.nl.Close()
	_ = r.set.CloseLasting()
}

// Read reads the netdev ruleset that applies to dev's ingress, in the
// caller's network namespace.
func Read(dev string, ifindex int) (*Ruleset, error) {
	r, err := NewReader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Read(dev, ifindex)
}

// Read reads the netdev ruleset that applies to dev's ingress.
func (r *Reader) Read(dev string, ifindex int) (*Ruleset, error) {
	c := r.nl
	tables, err := readTables(c, Family)
	if err != nil {
		return nil, err
	}
	chains, err := readChains(c, Family)
	if err != nil {
		return nil, err
	}
	rules, err := readRules(c, Family)
	if err != nil {
		return nil, err
	}
	rs := &Ruleset{Dev: dev, Ifindex: ifindex, chains: map[string]*Chain{}, sets: map[string]map[string]*setInfo{}}
	active := map[string]uint64{}
	for _, t := range tables {
		if t.Flags&nftTableFlagDormant == 0 {
			active[t.Name] = t.Handle
		}
	}
	used := map[string]bool{}
	for _, ch := range chains {
		th, ok := active[ch.Table]
		if !ok {
			continue
		}
		c := &Chain{Table: ch.Table, Name: ch.Name, Base: ch.Base, Priority: ch.Priority, Policy: ch.Policy,
			handle: ch.Handle, tableH: th}
		rs.chains[ch.Table+"/"+ch.Name] = c
		if ch.Base && ch.Hook == hookIngress && ch.Type == "filter" && slices.Contains(ch.Devices, dev) {
			rs.Base = append(rs.Base, c)
			used[ch.Table] = true
		}
	}
	// Hook order: priority, then registration. Equal priorities run in
	// the order the chains were registered, which handles approximate.
	sort.SliceStable(rs.Base, func(i, j int) bool {
		a, b := rs.Base[i], rs.Base[j]
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		if a.tableH != b.tableH {
			return a.tableH < b.tableH
		}
		return a.handle < b.handle
	})
	for i := range rules {
		ru := &rules[i]
		if c := rs.chains[ru.Table+"/"+ru.Chain]; c != nil && used[ru.Table] {
			c.Rules = append(c.Rules, ru)
		}
	}
	for t := range used {
		s, err := readSets(r.set, Family, t)
		if err != nil {
			return nil, err
		}
		rs.sets[t] = s
	}
	return rs, nil
}
