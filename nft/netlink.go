package nft

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The netdev family's hooks (NF_NETDEV_*).
const (
	hookIngress = 0
	hookEgress  = 1
	// NF_INET_INGRESS: the inet family's ingress hook.
	inetHookIngress = 5

	nfDrop   = 0 // NF_DROP: a chain policy
	nfAccept = 1
)

// Netlink attributes google/nftables does not name (linux/netfilter/nf_tables.h).
const (
	nftaTableHandle     = 4 // NFTA_TABLE_HANDLE
	nftaHookDevs        = 4 // NFTA_HOOK_DEVS: nested NFTA_DEVICE_NAME
	nftaDeviceName      = 1
	nftaDevicePrefix    = 2 // NFTA_DEVICE_PREFIX (6.16): a wildcard's prefix
	nftaFwdSregDev      = 1
	nftaFwdSregAddr     = 2
	nftTableFlagDormant = 0x1
)

// Message types newer than golang.org/x/sys names (enum nf_tables_msg_types).
const (
	nftMsgDestroyTable   = 26
	nftMsgDestroyChain   = 27
	nftMsgDestroyRule    = 28
	nftMsgDestroySet     = 29
	nftMsgDestroySetElem = 30
)

// tableInfo, chainInfo and ruleInfo are what the kernel dumps, decoded by
// us: google/nftables leaves out a chain's devices and silently drops
// expressions it does not know, and a dropped match would widen a rule.
type tableInfo struct {
	Name   string
	Handle uint64
	Flags  uint32
}

type chainInfo struct {
	Table    string
	Name     string
	Handle   uint64
	Base     bool
	Hook     uint32
	Priority int32
	Policy   uint32 // NF_DROP or NF_ACCEPT
	Devices  []string
	// DevicePrefixes: the devices given by a wildcard ("eth*": Linux
	// 6.16's NFTA_DEVICE_PREFIX), without the star.
	DevicePrefixes []string
	Type           string
}

type exprInfo struct {
	Name string
	E    expr.Any // nil: not decoded (unsupported)
	Fwd  *fwdExpr
}

type fwdExpr struct {
	DevReg  uint32
	HasAddr bool
}

type ruleInfo struct {
	Table  string
	Chain  string
	Handle uint64
	Exprs  []exprInfo
}

func dumpNFT(c *netlink.Conn, msg uint16, family byte) ([]netlink.Message, error) {
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: []byte{family, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return nil, err
	}
	return msgs, nil
}

// readGen reads the ruleset's generation id (NFT_MSG_GETGEN): every
// committed transaction moves it, so equal ids before and after a read
// mean one generation was read.
func readGen(c *netlink.Conn) (uint32, error) {
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("read the ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if gen, ok := GenOf(m); ok {
			return gen, nil
		}
	}
	return 0, fmt.Errorf("read the ruleset generation: no NFTA_GEN_ID in the answer")
}

// GenOf is the generation id of an NFT_MSG_NEWGEN notification.
func GenOf(m netlink.Message) (uint32, bool) {
	ad, err := decoder(m)
	if err != nil {
		return 0, false
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_ID {
			return ad.Uint32(), true
		}
	}
	return 0, false
}

func decoder(m netlink.Message) (*netlink.AttributeDecoder, error) {
	if len(m.Data) < 4 {
		return nil, fmt.Errorf("short nfnetlink message")
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

func readTables(c *netlink.Conn, family byte) ([]tableInfo, error) {
	msgs, err := dumpNFT(c, unix.NFT_MSG_GETTABLE, family)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []tableInfo
	for _, m := range msgs {
		ad, err := decoder(m)
		if err != nil {
			return nil, err
		}
		var t tableInfo
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_TABLE_NAME:
				t.Name = ad.String()
			case unix.NFTA_TABLE_FLAGS:
				t.Flags = ad.Uint32()
			case nftaTableHandle:
				t.Handle = ad.Uint64()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("decode table: %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}

func readChains(c *netlink.Conn, family byte) ([]chainInfo, error) {
	msgs, err := dumpNFT(c, unix.NFT_MSG_GETCHAIN, family)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	var out []chainInfo
	for _, m := range msgs {
		ch, err := decodeChain(m)
		if err != nil {
			return nil, err
		}
		out = append(out, ch)
	}
	return out, nil
}

// flowtableInfo is a flowtable: a fast path of its own on its devices'
// ingress hook, at its priority, for the flows a rule offloaded to it.
type flowtableInfo struct {
	Family   byte
	Table    string
	Name     string
	Priority int32
	Devices  chainInfo // only the devices, for hooks
}

// Flowtable attributes (enum nft_flowtable_attributes, _hook_attributes).
const (
	nftaFlowtableTable    = 1
	nftaFlowtableName     = 2
	nftaFlowtableHook     = 3
	nftaFlowtableHookPrio = 2
	nftaFlowtableHookDevs = 3
)

// readFlowtables reads the flowtables of every family.
func readFlowtables(c *netlink.Conn) ([]flowtableInfo, error) {
	msgs, err := dumpNFT(c, unix.NFT_MSG_GETFLOWTABLE, unix.NFPROTO_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("list flowtables: %w", err)
	}
	var out []flowtableInfo
	for _, m := range msgs {
		ad, err := decoder(m)
		if err != nil {
			return nil, err
		}
		ft := flowtableInfo{Family: m.Data[0]}
		for ad.Next() {
			switch ad.Type() {
			case nftaFlowtableTable:
				ft.Table = ad.String()
			case nftaFlowtableName:
				ft.Name = ad.String()
			case nftaFlowtableHook:
				ad.Nested(func(hd *netlink.AttributeDecoder) error {
					for hd.Next() {
						switch hd.Type() {
						case nftaFlowtableHookPrio:
							ft.Priority = int32(hd.Uint32())
						case nftaFlowtableHookDevs:
							hd.Nested(ft.Devices.decodeDevices)
						}
					}
					return nil
				})
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("decode flowtable: %w", err)
		}
		out = append(out, ft)
	}
	return out, nil
}

// decodeChain decodes one chain of a dump.
func decodeChain(m netlink.Message) (chainInfo, error) {
	ad, err := decoder(m)
	if err != nil {
		return chainInfo{}, err
	}
	ch := chainInfo{Policy: nfAccept}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_TABLE:
			ch.Table = ad.String()
		case unix.NFTA_CHAIN_NAME:
			ch.Name = ad.String()
		case unix.NFTA_CHAIN_HANDLE:
			ch.Handle = ad.Uint64()
		case unix.NFTA_CHAIN_POLICY:
			ch.Policy = ad.Uint32()
		case unix.NFTA_CHAIN_TYPE:
			ch.Type = ad.String()
		case unix.NFTA_CHAIN_HOOK:
			ch.Base = true
			ad.Nested(func(hd *netlink.AttributeDecoder) error {
				for hd.Next() {
					switch hd.Type() {
					case unix.NFTA_HOOK_HOOKNUM:
						ch.Hook = hd.Uint32()
					case unix.NFTA_HOOK_PRIORITY:
						ch.Priority = int32(hd.Uint32())
					case unix.NFTA_HOOK_DEV:
						ch.Devices = append(ch.Devices, hd.String())
					case nftaHookDevs:
						hd.Nested(ch.decodeDevices)
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return chainInfo{}, fmt.Errorf("decode chain: %w", err)
	}
	return ch, nil
}

// decodeDevices reads a hook's devices (NFTA_HOOK_DEVS and the
// flowtable's): names, and wildcard prefixes.
func (ch *chainInfo) decodeDevices(dd *netlink.AttributeDecoder) error {
	for dd.Next() {
		switch dd.Type() {
		case nftaDeviceName:
			ch.Devices = append(ch.Devices, dd.String())
		case nftaDevicePrefix:
			ch.DevicePrefixes = append(ch.DevicePrefixes, dd.String())
		}
	}
	return nil
}

// hooks says whether the chain is hooked on dev, by name or wildcard.
func (ch *chainInfo) hooks(dev string) bool {
	if slices.Contains(ch.Devices, dev) {
		return true
	}
	for _, p := range ch.DevicePrefixes {
		if strings.HasPrefix(dev, p) {
			return true
		}
	}
	return false
}

func readRules(c *netlink.Conn, family byte) ([]ruleInfo, error) {
	msgs, err := dumpNFT(c, unix.NFT_MSG_GETRULE, family)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	out := make([]ruleInfo, 0, len(msgs))
	for _, m := range msgs {
		r, _, err := decodeRule(m, family)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// decodeRule decodes a rule of a dump or a notification, and the handle of
// the rule before it (NFTA_RULE_POSITION), 0 if none is given.
func decodeRule(m netlink.Message, family byte) (r ruleInfo, prev uint64, err error) {
	ad, err := decoder(m)
	if err != nil {
		return r, 0, err
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_RULE_TABLE:
			r.Table = ad.String()
		case unix.NFTA_RULE_CHAIN:
			r.Chain = ad.String()
		case unix.NFTA_RULE_HANDLE:
			r.Handle = ad.Uint64()
		case unix.NFTA_RULE_POSITION:
			prev = ad.Uint64()
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(ld *netlink.AttributeDecoder) error {
				for ld.Next() {
					if ld.Type() != unix.NFTA_LIST_ELEM {
						continue
					}
					ld.Nested(func(ed *netlink.AttributeDecoder) error {
						e, err := decodeExpr(family, ed)
						if err != nil {
							return err
						}
						r.Exprs = append(r.Exprs, e)
						return nil
					})
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return r, 0, fmt.Errorf("decode rule: %w", err)
	}
	return r, prev, nil
}

// decodeExpr decodes the expressions the translator understands and keeps
// the name of every other one, so a rule holding it is never mistaken for
// a rule without it.
func decodeExpr(family byte, ed *netlink.AttributeDecoder) (exprInfo, error) {
	var (
		e    exprInfo
		data []byte
	)
	for ed.Next() {
		switch ed.Type() {
		case unix.NFTA_EXPR_NAME:
			e.Name = ed.String()
		case unix.NFTA_EXPR_DATA:
			data = ed.Bytes()
		}
	}
	var x expr.Any
	switch e.Name {
	case "payload":
		x = &expr.Payload{}
	case "meta":
		x = &expr.Meta{}
	case "cmp":
		x = &expr.Cmp{}
	case "bitwise":
		x = &expr.Bitwise{}
	case "range":
		x = &expr.Range{}
	case "lookup":
		x = &expr.Lookup{}
	case "counter":
		x = &expr.Counter{}
	case "immediate":
		x = &expr.Immediate{}
	case "fwd":
		f, err := decodeFwd(data)
		if err != nil {
			return e, fmt.Errorf("decode fwd: %w", err)
		}
		e.Fwd = f
		return e, nil
	default:
		return e, nil
	}
	if err := expr.Unmarshal(family, data, x); err != nil {
		return e, fmt.Errorf("decode %s: %w", e.Name, err)
	}
	// A verdict is an immediate into the verdict register.
	if imm, ok := x.(*expr.Immediate); ok && imm.Register == unix.NFT_REG_VERDICT && len(imm.Data) == 0 {
		v := &expr.Verdict{}
		if err := expr.Unmarshal(family, data, v); err != nil {
			return e, fmt.Errorf("decode verdict: %w", err)
		}
		x = v
	}
	e.E = x
	return e, nil
}

func decodeFwd(data []byte) (*fwdExpr, error) {
	ad, err := netlink.NewAttributeDecoder(data)
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	f := &fwdExpr{}
	for ad.Next() {
		switch ad.Type() {
		case nftaFwdSregDev:
			f.DevReg = ad.Uint32()
		case nftaFwdSregAddr:
			f.HasAddr = true
		}
	}
	return f, ad.Err()
}

// readSets returns every named and anonymous set of a table with its
// elements, by name.
func readSets(conn *nftables.Conn, family byte, table string) (map[string]*setInfo, error) {
	t := &nftables.Table{Name: table, Family: nftables.TableFamily(family)}
	sets, err := conn.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets of %s: %w", table, err)
	}
	out := make(map[string]*setInfo, len(sets))
	for _, s := range sets {
		els, err := conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		out[s.Name] = &setInfo{Set: s, Elements: els}
	}
	return out, nil
}

type setInfo struct {
	Set      *nftables.Set
	Elements []nftables.SetElement
}
