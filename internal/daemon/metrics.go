package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xdpflow/xdpflow/maps"
	"github.com/xdpflow/xdpflow/rule"
)

// daemonMetrics is the daemon's Prometheus endpoint: the program's
// counters and the tables' sizes per device, read from the pinned maps at
// each scrape (tableCollector), and the daemon's own syncs.
type daemonMetrics struct {
	syncSeconds *prometheus.HistogramVec
	syncErrors  *prometheus.CounterVec
	lastSync    prometheus.Gauge
	nftDumps    prometheus.Counter
	nftCompiles *prometheus.CounterVec
}

func newDaemonMetrics(reg prometheus.Registerer) *daemonMetrics {
	m := &daemonMetrics{
		syncSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "xdpflow_sync_duration_seconds", Help: "Time from reading a source's rules to having them in XDP.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"dev", "source"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xdpflow_sync_errors_total", Help: "Syncs that failed (their rules were punted or left as they were).",
		}, []string{"dev"}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xdpflow_last_sync_timestamp_seconds", Help: "When the daemon last finished a sync (Unix time).",
		}),
		nftDumps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xdpflow_nft_rule_dumps_total",
			Help: "Times the daemon read every nft rule: at start, and for changes it could not follow one by one.",
		}),
	}
	m.nftCompiles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "xdpflow_nft_compiles_total",
		Help: "nft results made: whole (every rule compiled) or in place (the last result changed by the rules that came and went).",
	}, []string{"how"})
	reg.MustRegister(m.syncSeconds, m.syncErrors, m.lastSync, m.nftDumps, m.nftCompiles)
	return m
}

func (m *daemonMetrics) synced(dev, source string, took time.Duration) {
	if m == nil {
		return
	}
	m.syncSeconds.WithLabelValues(dev, source).Observe(took.Seconds())
	m.lastSync.SetToCurrentTime()
}

func (m *daemonMetrics) nftRuleDumps(n int) {
	if m != nil && n > 0 {
		m.nftDumps.Add(float64(n))
	}
}

func (m *daemonMetrics) nftCompiled(whole, inPlace int) {
	if m != nil {
		m.nftCompiles.WithLabelValues("whole").Add(float64(whole))
		m.nftCompiles.WithLabelValues("in_place").Add(float64(inPlace))
	}
}

func (m *daemonMetrics) failed(dev string) {
	if m != nil {
		m.syncErrors.WithLabelValues(dev).Inc()
	}
}

// tableCollector reads each enabled device's counters and table at
// scrape time, under the daemon's lock (a scrape waits for a sync).
type tableCollector struct{ d *daemon }

var (
	packetsDesc = prometheus.NewDesc("xdpflow_packets_total",
		"Packets the XDP program saw, by what became of them.", []string{"dev", "outcome"}, nil)
	rulesDesc = prometheus.NewDesc("xdpflow_rules",
		"Rules in the device's table, by source and whether they decide in XDP or punt (pass to the kernel).",
		[]string{"dev", "source", "state"}, nil)
	flowsDesc = prometheus.NewDesc("xdpflow_flows",
		"Flows (expanded entries) in the device's table.", []string{"dev"}, nil)
	maxFlowsDesc = prometheus.NewDesc("xdpflow_flows_max",
		"The device's table's room for flows.", []string{"dev"}, nil)
)

func (c tableCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- rulesDesc
	ch <- flowsDesc
	ch <- maxFlowsDesc
}

func (c tableCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dev := range d.devices {
		_ = d.withTable(dev, func(o *openTable) error {
			cnt, err := o.table.Counters()
			if err != nil {
				return err
			}
			for i, name := range maps.CounterNames {
				ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(cnt[i]), dev, name)
			}
			n := map[[2]string]int{}
			for _, in := range o.table.Rules() {
				state := "offloaded"
				if a := in.Rule.Actions; len(a) == 1 && a[0].Kind == rule.ActPass {
					state = "punted"
				}
				n[[2]string{in.Rule.Source.String(), state}]++
			}
			for _, src := range []rule.Source{rule.SourceTC, rule.SourceNFT, rule.SourceCLI} {
				for _, state := range []string{"offloaded", "punted"} {
					ch <- prometheus.MustNewConstMetric(rulesDesc, prometheus.GaugeValue,
						float64(n[[2]string{src.String(), state}]), dev, src.String(), state)
				}
			}
			sz := o.table.Sizes()
			ch <- prometheus.MustNewConstMetric(flowsDesc, prometheus.GaugeValue, float64(sz.Flows), dev)
			ch <- prometheus.MustNewConstMetric(maxFlowsDesc, prometheus.GaugeValue, float64(sz.MaxFlows), dev)
			return nil
		})
	}
}

// serveMetrics listens on addr and serves /metrics until the process
// ends; it returns once it listens, or why it cannot.
func (d *daemon) serveMetrics(addr string) error {
	reg := prometheus.NewRegistry()
	d.metrics = newDaemonMetrics(reg)
	reg.MustRegister(tableCollector{d})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("daemon: --metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Errorf("metrics: %v", err)
		}
	}()
	d.log.Printf("metrics on http://%s/metrics", l.Addr())
	return nil
}
