package maps

import "github.com/xdpflow/xdpflow/bpf"

// CounterNames names the program's counters (Table.Counters' indexes), as
// status and the metrics show them.
var CounterNames = map[bpf.XdpflowXfCounter]string{
	bpf.XdpflowXfCounterXF_CNT_RX:               "rx",
	bpf.XdpflowXfCounterXF_CNT_HIT:              "hits",
	bpf.XdpflowXfCounterXF_CNT_MISS:             "misses",
	bpf.XdpflowXfCounterXF_CNT_UNPARSED:         "unparsed",
	bpf.XdpflowXfCounterXF_CNT_DROP:             "drop",
	bpf.XdpflowXfCounterXF_CNT_PASS:             "pass",
	bpf.XdpflowXfCounterXF_CNT_TX:               "tx",
	bpf.XdpflowXfCounterXF_CNT_REDIRECT:         "redirect",
	bpf.XdpflowXfCounterXF_CNT_ACTION_ERROR:     "action_errors",
	bpf.XdpflowXfCounterXF_CNT_SUBTABLE_LOOKUPS: "subtable_lookups",
	bpf.XdpflowXfCounterXF_CNT_CACHE_HIT:        "cache_hits",
	bpf.XdpflowXfCounterXF_CNT_KEEPALIVE:        "keepalive_to_kernel",
}
