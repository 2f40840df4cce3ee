package offload

import (
	"errors"
	"fmt"
	"strings"

	"github.com/xdpflow/xdpflow/loader"
	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/nft"
	"github.com/xdpflow/xdpflow/rule"
	"github.com/xdpflow/xdpflow/rule/ruletext"
)

// Open opens an enabled device's pins and its table, in p, whose lock the
// caller holds.
func Open(p loader.Paths, dev string) (*loader.Device, *maps.Table, error) {
	d, err := loader.Open(p, dev)
	if err != nil {
		if errors.Is(err, loader.ErrNotEnabled) {
			return nil, nil, fmt.Errorf("xdpflow is not enabled on %s (run: xdpflow enable dev %s)", dev, dev)
		}
		return nil, nil, err
	}
	t, err := maps.Open(&d.Maps, RuleParser(dev))
	if err != nil {
		d.Close()
		return nil, nil, fmt.Errorf("%s: %w", dev, err)
	}
	return d, t, nil
}

// RuleParser reads a pinned rule spec back, whatever its source.
func RuleParser(dev string) maps.ParseFunc {
	return func(text string) (*rule.Rule, error) {
		if strings.HasPrefix(text, nft.SpecPrefix) {
			return nft.ParseSpec(dev, text)
		}
		return ruletext.Parse(dev, text)
	}
}
