package nft

import (
	"fmt"
	"os"
	"testing"
)

func TestDebugDump(t *testing.T) {
	dev := os.Getenv("XF_DEBUG_DEV")
	if dev == "" {
		t.Skip("XF_DEBUG_DEV not set")
	}
	rs, err := Read(dev, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rs.chains {
		for _, r := range c.Rules {
			fmt.Printf("%s/%s/%d\n", c.Table, c.Name, r.Handle)
			for _, e := range r.Exprs {
				fmt.Printf("   %s %+v %+v\n", e.Name, e.E, e.Fwd)
			}
		}
	}
	for tn, sets := range rs.sets {
		for n, s := range sets {
			fmt.Printf("set %s/%s %+v\n", tn, n, *s.Set)
			for _, el := range s.Elements {
				fmt.Printf("   %+v\n", el)
			}
		}
	}
}
