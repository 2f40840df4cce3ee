package maps

import "github.com/xdpflow/xdpflow/bpf"

// The program's map layouts as bpf2go generated them (bpf/xdpflow_bpfel.go,
// from bpf/xdpflow.h), under names that say what they are. This is the
// one file that spells a generated name; the rest of the package, and
// every other, goes through these.

// The records the maps hold.
type (
	metaRecord     = bpf.XdpflowXfMeta          // meta's one value
	flowKey        = bpf.XdpflowXfFlowKey       // a key of flows (the whole masked key)
	narrowKey      = bpf.XdpflowXfNarrowFlowKey // a key of flows_narrow
	flowValue      = bpf.XdpflowXfRangedFlow    // a value of flows_ranged; flows and flows_narrow hold its Flow
	plainValue     = bpf.XdpflowXfFlow          // a value of flows and flows_narrow
	actionSet      = bpf.XdpflowXfActionSet     // a value of action_sets
	ruleSpec       = bpf.XdpflowXfRuleSpec      // a value of rule_specs
	ruleStats      = bpf.XdpflowXfRuleStats     // a value of rule_stats (per CPU)
	subtableList   = bpf.XdpflowXfSubtableList  // a buffer of subtable_lists
	subtableEntry  = bpf.XdpflowXfSubtable      // one subtable of a list
	counterRecords = bpf.XdpflowXfCounters      // counters' value (per CPU)
)

// The maps' names, in a collection spec and as pinned.
const (
	mapFlows       = bpf.XdpflowMapFlows
	mapFlowsNarrow = bpf.XdpflowMapFlowsNarrow
	mapFlowsRanged = bpf.XdpflowMapFlowsRanged
	mapRuleStats   = bpf.XdpflowMapRuleStats
	mapRuleSpecs   = bpf.XdpflowMapRuleSpecs
	mapActionSets  = bpf.XdpflowMapActionSets
	mapFlowCache   = bpf.XdpflowMapFlowCache
	MetaMapName    = bpf.XdpflowMapMeta // the pin ReadAttachment reads
)

// The program's compile-time limits (enum xf_limits).
const (
	maxActions   = int(bpf.XdpflowXfLimitsXF_MAX_ACTIONS)     // actions of one rule
	listBuffers  = uint32(bpf.XdpflowXfLimitsXF_LIST_BUFFERS) // the ring of subtable list buffers
	narrowWords  = int(bpf.XdpflowXfLimitsXF_NARROW_WORDS)    // key words of a narrow subtable's flows
	metaMagic    = uint32(bpf.XdpflowXfLimitsXF_META_MAGIC)   // meta's layout version
	cacheWays    = int(bpf.XdpflowXfLimitsXF_CACHE_WAYS)      // flow cache entries of one set
	cacheSetBits = bpf.XdpflowXfLimitsXF_CACHE_SET_BITS       // log2 of the default sets per CPU
	cacheSetMin  = bpf.XdpflowXfLimitsXF_CACHE_SET_BITS_MIN   // log2 of the fewest
	cacheSetMax  = bpf.XdpflowXfLimitsXF_CACHE_SET_BITS_MAX   // log2 of the most
)

// A listed subtable's ranged (struct xf_subtable): the program reads any
// nonzero alike, flows with ranges; the table tells whose choice the
// flows are.
const (
	rangedNFT         = 1 // nft's compiler chose them
	rangedChosen      = 2 // the table chose them, for tc filters (choices.go)
	rangedChosenPorts = 3 // the same, checking ports alone
)

// meta.dirty's bits (enum xf_dirty).
const (
	dirtyWriting = bpf.XdpflowXfDirtyXF_DIRTY_WRITING
	dirtyGrace   = bpf.XdpflowXfDirtyXF_DIRTY_GRACE
)

// An action's op (enum xf_action_op) and flags (enum xf_vlan_flags), as
// struct xf_action holds them.
const (
	opDrop       = uint8(bpf.XdpflowXfActionOpXF_ACT_DROP)
	opPass       = uint8(bpf.XdpflowXfActionOpXF_ACT_PASS)
	opRedirect   = uint8(bpf.XdpflowXfActionOpXF_ACT_REDIRECT)
	opTX         = uint8(bpf.XdpflowXfActionOpXF_ACT_TX) // back out of the device it came in on
	opVlanPush   = uint8(bpf.XdpflowXfActionOpXF_ACT_VLAN_PUSH)
	opVlanPop    = uint8(bpf.XdpflowXfActionOpXF_ACT_VLAN_POP)
	opVlanModify = uint8(bpf.XdpflowXfActionOpXF_ACT_VLAN_MODIFY)
	opSetEthSrc  = uint8(bpf.XdpflowXfActionOpXF_ACT_SET_ETH_SRC)
	opSetEthDst  = uint8(bpf.XdpflowXfActionOpXF_ACT_SET_ETH_DST)
	flagVlanPrio = uint8(bpf.XdpflowXfVlanFlagsXF_VLAN_SET_PRIO)
)

// Counter is one of the program's packet counters (enum xf_counter): an
// index of what Counters and ReadCounters return.
type Counter uint32

const (
	CounterRX              = Counter(bpf.XdpflowXfCounterXF_CNT_RX)
	CounterHit             = Counter(bpf.XdpflowXfCounterXF_CNT_HIT)
	CounterMiss            = Counter(bpf.XdpflowXfCounterXF_CNT_MISS)
	CounterUnparsed        = Counter(bpf.XdpflowXfCounterXF_CNT_UNPARSED)
	CounterDrop            = Counter(bpf.XdpflowXfCounterXF_CNT_DROP)
	CounterPass            = Counter(bpf.XdpflowXfCounterXF_CNT_PASS)
	CounterTX              = Counter(bpf.XdpflowXfCounterXF_CNT_TX)
	CounterRedirect        = Counter(bpf.XdpflowXfCounterXF_CNT_REDIRECT)
	CounterActionError     = Counter(bpf.XdpflowXfCounterXF_CNT_ACTION_ERROR)
	CounterSubtableLookups = Counter(bpf.XdpflowXfCounterXF_CNT_SUBTABLE_LOOKUPS)
	CounterCacheHit        = Counter(bpf.XdpflowXfCounterXF_CNT_CACHE_HIT)
	CounterKeepalive       = Counter(bpf.XdpflowXfCounterXF_CNT_KEEPALIVE)

	// NumCounters is how many there are.
	NumCounters = int(bpf.XdpflowXfCounterXF_CNT_MAX)
)
