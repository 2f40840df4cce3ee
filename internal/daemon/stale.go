package daemon

import (
	"fmt"
	"io"

	"github.com/xdpflow/xdpflow/loader"
)

// RemoveStaleNamespaces removes the pins of network namespaces that are
// gone (loader.StaleNamespaces) and tells on w the devices it removed.
func RemoveStaleNamespaces(p loader.Paths, w io.Writer) {
	stale, err := loader.StaleNamespaces(p)
	if err != nil {
		fmt.Fprintf(w, "xdpflow: looking for pins of deleted network namespaces: %v\n", err)
		return
	}
	for _, ns := range stale {
		n, err := loader.RemoveStaleNamespace(p, ns)
		if err != nil {
			fmt.Fprintf(w, "xdpflow: network namespace %s is gone; removing its pins: %v\n", ns, err)
			continue
		}
		if n > 0 { // a directory without devices is no news
			fmt.Fprintf(w, "xdpflow: network namespace %s is gone: removed the pins of its %d device(s)\n", ns, n)
		}
	}
}
