package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// SpecPrefix starts the persisted text of every nft rule part.
const SpecPrefix = "nft "

// FormatSpec is the text pinned for one installed part:
// "nft netdev/t/c/5#0 pref 3 digest 0123abcd action drop", pref being the
// part's level. The entries
// themselves are pinned in the flows map; the digest names them, so the
// daemon recognises an unchanged part after a restart.
func FormatSpec(r *rule.Rule) string {
	return fmt.Sprintf("%s%s pref %d digest %s%s", SpecPrefix, r.Name, r.Level, r.Digest, ruletext.FormatActions(r.Actions))
}

// ParseSpec reads FormatSpec's text back into an opaque rule.
func ParseSpec(dev, text string) (*rule.Rule, error) {
	w := strings.Fields(strings.TrimPrefix(text, SpecPrefix))
	if !strings.HasPrefix(text, SpecPrefix) || len(w) < 5 || w[1] != "pref" || w[3] != "digest" {
		return nil, fmt.Errorf("nft rule spec %q: malformed", text)
	}
	level, err := strconv.ParseUint(w[2], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("nft rule spec %q: pref: %w", text, err)
	}
	acts, err := ruletext.ParseActions(w[5:])
	if err != nil {
		return nil, fmt.Errorf("nft rule spec %q: %w", text, err)
	}
	return &rule.Rule{Source: rule.SourceNFT, Dev: dev, Name: w[0], Level: uint32(level), Protocol: rule.EthPAll,
		Opaque: true, Digest: w[4], Actions: acts}, nil
}

// RuleName is the nft rule a part belongs to ("netdev/t/c/5").
func RuleName(part string) string {
	if i := strings.LastIndexByte(part, '#'); i >= 0 {
		return part[:i]
	}
	return part
}

// Sync makes the table's nft parts equal to want in one transaction
// (maps.Table.SyncSource).
func Sync(t *maps.Table, want []*rule.Rule) (added, removed int, err error) {
	return t.SyncSource(rule.SourceNFT, want)
}

// digest names a part's entries and actions in its spec.
func digest(ms []rule.Match, acts string) string {
	h := sha256.New()
	keys := make([]string, len(ms))
	for i := range ms {
		r, q := ms[i].SrcPortRange, ms[i].DstPortRange
		sa, da := ms[i].SrcAddrs, ms[i].DstAddrs
		keys[i] = string(rule.KeyBytes(&ms[i].Key)) + string(rule.KeyBytes(&ms[i].Mask)) +
			fmt.Sprintf("%d-%d,%d-%d,%d/%d,%d/%d", r.Min, r.Max, q.Min, q.Max, sa.Addr, sa.Bits, da.Addr, da.Bits)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Write([]byte(k))
	}
	h.Write([]byte(acts))
	return hex.EncodeToString(h.Sum(nil)[:8])
}
