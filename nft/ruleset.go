package nft

import (
	"errors"
	"fmt"
	"sort"
	"sync/atomic"

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
	setsGen uint64 // moves when the sets are read again (Compiler)
	// edits are the rule edits since the rules were last dumped, which
	// began editsEpoch (Compiler).
	edits      []ruleEdit
	editsEpoch uint64
	// CheckFwd, when set, says whether XDP can redirect into a device
	// (loader.CheckXDPForward); a fwd it refuses is punted.
	CheckFwd func(ifindex int) error
	// Blocked, when set, is why no rule of the device may run in XDP (a
	// hook that runs before nft's, say): every one is punted with it.
	Blocked error
	// egress: the netdev egress base chains of active tables. nft's fwd
	// goes through dev_queue_xmit, which runs them; an XDP redirect does
	// not.
	egress []chainInfo
	// inetIngress: the inet family's ingress base chains on Dev (kernel
	// 5.10+) and the flowtables on it, which the kernel runs on the same
	// hook as the netdev chains, ordered among them by priority.
	inetIngress []*Chain
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
	foreign  string // for a hook xdpflow does not mirror: what it is
}

// editEpochs numbers the epochs of every reader's edits, so a compiler
// never takes one reader's edits for another's.
var editEpochs atomic.Uint64

// Family is the nft family xdpflow mirrors.
const Family = unix.NFPROTO_NETDEV

// Reader reads rulesets over netlink sockets kept open between reads (a
// daemon reads on every change). It keeps what it read last and reads again
// only the kinds of objects Stale marked: every kind starts stale.
type Reader struct {
	nl    *netlink.Conn
	set   *nftables.Conn
	stale Kinds
	// gen is the generation what was kept is known to be current for:
	// the last read's, or the last Seen.
	gen      uint32
	genKnown bool
	genRead  bool // gen is a Read's, not a followed commit's
	// dumps counts the reads of objects from the kernel.
	dumps int
	// Last read, valid while their kind is not stale.
	tables []tableInfo
	chains []chainInfo
	// The inet family's, for its ingress chains (no rules are read),
	// and every family's flowtables.
	inetTables []tableInfo
	inetChains []chainInfo
	flowtables []flowtableInfo
	sets       map[string]map[string]*setInfo // by table
	setsGen    uint64                         // counts the times sets were dropped
	// rules: the netdev family's rules by "table/chain", in chain order,
	// kept up to date by Follow. A list is never changed in place: a
	// Ruleset read earlier keeps its own.
	rules map[string][]*ruleInfo
	// unfinished: notifications of a commit whose NEWGEN has not come.
	unfinished []netlink.Message
	ruleDumps  int // rule dumps since TakeRuleDumps
	// edits: what Follow did to the rules since the last dump, which
	// started epoch editsEpoch (Compiler).
	edits      []ruleEdit
	editsEpoch uint64
}

// Kinds is a set of nftables object kinds, as changes name them.
type Kinds uint32

const (
	KindTables Kinds = 1 << iota
	KindChains
	KindRules
	KindSets       // sets and their elements
	KindAll  Kinds = KindTables | KindChains | KindRules | KindSets
)

// KindsOf says which kinds of objects an nftables notification changes.
// Rules are followed one by one (Follow); a table or chain change reads
// the rules again too, since it can take rules along. Sets are read again
// on any set or element change (a rule's anonymous set comes with its
// own). Message types it does not know make everything stale.
func KindsOf(msgType uint16) Kinds {
	switch msgType {
	case unix.NFT_MSG_NEWGEN:
		return 0
	case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE, nftMsgDestroyTable:
		return KindTables | KindRules
	case unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN, nftMsgDestroyChain:
		return KindChains | KindRules
	case unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE, nftMsgDestroyRule:
		return KindRules
	case unix.NFT_MSG_NEWSET, unix.NFT_MSG_DELSET, nftMsgDestroySet,
		unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM, nftMsgDestroySetElem:
		return KindSets
	}
	return KindAll
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
	return &Reader{nl: c, set: sc, stale: KindAll}, nil
}

// TakeRuleDumps says how many times the reader read every rule since it
// was last asked: reads for changes Follow could not apply.
func (r *Reader) TakeRuleDumps() int {
	n := r.ruleDumps
	r.ruleDumps = 0
	return n
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

// ErrMoving is a ruleset that changed during every read tried.
var ErrMoving = errors.New("nft: the ruleset changed during each of 3 reads")

// Read reads the netdev ruleset that applies to dev's ingress, all of it
// from one generation: tables, chains, rules and sets are separate dumps,
// and a read the generation moved under is done again.
func (r *Reader) Read(dev string, ifindex int) (*Ruleset, error) {
	for try := 0; try < 3; try++ {
		before, err := readGen(r.nl)
		if err != nil {
			return nil, err
		}
		if !r.genKnown || before != r.gen {
			// Changes the caller has not told of (Stale, Seen): what was
			// kept from an earlier read may be of an older generation.
			r.stale = KindAll
		}
		dumps := r.dumps
		rs, err := r.read(dev, ifindex)
		if err != nil {
			return nil, err
		}
		if r.dumps == dumps {
			// Nothing read: what was kept, the generation read before,
			// as when the changes Follow applied were all there was.
			return rs, nil
		}
		after, err := readGen(r.nl)
		if err != nil {
			return nil, err
		}
		if before == after {
			r.gen, r.genKnown, r.genRead = after, true, true
			return rs, nil
		}
		r.stale = KindAll
	}
	return nil, ErrMoving
}

// read reads what is stale and builds dev's ruleset.
func (r *Reader) read(dev string, ifindex int) (*Ruleset, error) {
	if err := r.readStale(); err != nil {
		return nil, err
	}
	return r.ruleset(dev, ifindex)
}

// readStale reads again the kinds of objects Stale marked.
func (r *Reader) readStale() error {
	c := r.nl
	var err error
	if r.stale != 0 || r.rules == nil || r.sets == nil {
		r.dumps++
	}
	if r.stale&KindTables != 0 {
		if r.tables, err = readTables(c, Family); err != nil {
			return err
		}
		if r.inetTables, err = readTables(c, unix.NFPROTO_INET); err != nil {
			return err
		}
		r.stale &^= KindTables
	}
	if r.stale&KindChains != 0 {
		if r.chains, err = readChains(c, Family); err != nil {
			return err
		}
		if r.inetChains, err = readChains(c, unix.NFPROTO_INET); err != nil {
			return err
		}
		if r.flowtables, err = readFlowtables(c); err != nil {
			return err
		}
		r.stale &^= KindChains
	}
	if r.stale&KindRules != 0 || r.rules == nil {
		rules, err := readRules(c, Family)
		if err != nil {
			return err
		}
		r.ruleDumps++
		r.edits, r.editsEpoch = nil, editEpochs.Add(1)
		r.rules = map[string][]*ruleInfo{}
		for i := range rules {
			key := rules[i].Table + "/" + rules[i].Chain
			r.rules[key] = append(r.rules[key], &rules[i])
		}
		r.stale &^= KindRules
	}
	if r.stale&KindSets != 0 || r.sets == nil {
		r.sets = map[string]map[string]*setInfo{}
		r.setsGen++
		r.stale &^= KindSets
	}
	return nil
}

// ruleset builds dev's ruleset from what the reader holds: its base
// chains in hook order, with the rules and sets they reach.
func (r *Reader) ruleset(dev string, ifindex int) (*Ruleset, error) {
	tables, chains := r.tables, r.chains
	rs := &Ruleset{Dev: dev, Ifindex: ifindex, chains: map[string]*Chain{}, sets: map[string]map[string]*setInfo{},
		setsGen: r.setsGen, edits: r.edits, editsEpoch: r.editsEpoch}
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
		if ch.Base && ch.Hook == hookIngress && ch.Type == "filter" && ch.hooks(dev) {
			rs.Base = append(rs.Base, c)
			used[ch.Table] = true
		}
		if ch.Base && ch.Hook == hookEgress {
			rs.egress = append(rs.egress, ch)
		}
	}
	inetActive := map[string]bool{}
	for _, t := range r.inetTables {
		inetActive[t.Name] = t.Flags&nftTableFlagDormant == 0
	}
	for _, ch := range r.inetChains {
		if inetActive[ch.Table] && ch.Base && ch.Hook == inetHookIngress && ch.hooks(dev) {
			rs.inetIngress = append(rs.inetIngress, &Chain{Table: ch.Table, Name: ch.Name, Base: true,
				Priority: ch.Priority, Policy: ch.Policy, foreign: "inet ingress chain inet/" + ch.Table + "/" + ch.Name})
		}
	}
	for _, ft := range r.flowtables {
		if ft.Devices.hooks(dev) {
			// Flows a forward rule offloaded to it are forwarded at its
			// priority, before the netdev chains that come after.
			name := fmt.Sprintf("%s/%s/%s", familyName(ft.Family), ft.Table, ft.Name)
			rs.inetIngress = append(rs.inetIngress, &Chain{Table: ft.Table, Name: ft.Name, Base: true,
				Priority: ft.Priority, foreign: "flowtable " + name})
		}
	}
	// Hook order: priority, then registration, latest first: a hook goes
	// before those of its priority already on the list
	// (nf_hook_entries_grow). Within a table, chain handles stand for
	// registration order; across tables nothing does, and Compile punts
	// from such a tie on (tieAcrossTables).
	sort.SliceStable(rs.Base, func(i, j int) bool {
		a, b := rs.Base[i], rs.Base[j]
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		if a.tableH != b.tableH {
			return a.tableH > b.tableH
		}
		return a.handle > b.handle
	})
	for key, c := range rs.chains {
		if used[c.Table] {
			c.Rules = r.rules[key]
		}
	}
	for t := range used {
		s, ok := r.sets[t]
		if !ok {
			var err error
			r.dumps++
			if s, err = readSets(r.set, Family, t); err != nil {
				return nil, err
			}
			r.sets[t] = s
		}
		rs.sets[t] = s
	}
	return rs, nil
}

// ChainRef names a base chain xdpflow does not mirror but must account for.
type ChainRef struct {
	What     string // "inet ingress chain inet/t/c", "flowtable ip/t/f"
	Priority int32
}

// ForeignIngress lists what else nft runs on the device's ingress hook
// and xdpflow does not mirror: inet ingress chains and flowtables.
func (rs *Ruleset) ForeignIngress() []ChainRef {
	var out []ChainRef
	for _, c := range rs.inetIngress {
		out = append(out, ChainRef{c.foreign, c.Priority})
	}
	return out
}

func familyName(f byte) string {
	switch f {
	case unix.NFPROTO_INET:
		return "inet"
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_IPV6:
		return "ip6"
	case unix.NFPROTO_NETDEV:
		return "netdev"
	}
	return fmt.Sprintf("family %d", f)
}

// EgressChains lists the netdev egress chains on dev, "table/chain".
func (rs *Ruleset) EgressChains(dev string) []string {
	var out []string
	for i := range rs.egress {
		if ch := &rs.egress[i]; ch.hooks(dev) {
			out = append(out, ch.Table+"/"+ch.Name)
		}
	}
	return out
}
