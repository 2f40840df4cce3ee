# xdpflow: `make demo` runs the main job, `make test` every test. Both install
# what they need on a fresh Debian machine (run as root).

GO      ?= go
BIN     := bin/xdpflow
APT_PKGS := clang llvm libbpf-dev iproute2 iputils-ping nftables ethtool kmod
GOTEST_FLAGS ?= -count=1 -timeout 40m

.PHONY: all deps build generate check test vet demo bench clean vmtest vm install deb image

all: build

# Debian packages the build, tests and demo use. Skipped when all present.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

build:
	$(GO) build -o $(BIN) ./cmd/xdpflow

# Rebuild the committed bpf2go output (needs clang).
generate: deps
	cd bpf && $(GO) generate ./...

vet:
	@bad=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi
	$(GO) vet ./...

# Seconds, no root, nothing installed: gofmt, vet and the tests that need
# neither root nor a VM (the others say SKIPPED).
check: vet
	$(GO) test -short -count=1 ./...

# Everything, as CI runs it: a test that cannot run fails.
test: deps vet build
	XDPFLOW_ALL_TESTS=1 $(GO) test $(GOTEST_FLAGS) ./...
	$(MAKE) vmtest

# The tests that need what this machine's kernel lacks (cls_flower, act_*,
# 8021q, openvswitch) run in a VM booted with Debian's stock kernel under
# qemu software emulation (scripts/vm/). VMTEST_RUN picks tests.
VMTEST_RUN ?= ^(TestTC|TestBatch|TestOVS|TestRedirectTargetEgressPath|TestNftFlowtableOnIngress|TestVerifierHeadroom)
vm:
	scripts/vm/build.sh
vmtest: deps build vm
	$(GO) test -c -o build/vm/selftests.test ./selftests/
	scripts/vm/run.sh -t 2400 sh -c 'cd selftests && XDPFLOW_ALL_TESTS=1 XDPFLOW_BIN=$(CURDIR)/$(BIN) ../build/vm/selftests.test -test.v -test.count=1 -test.timeout 38m -test.run "$(VMTEST_RUN)"'

demo: deps build
	./scripts/demo.sh

# Packet rates on veth (the table in README), per-program ns via
# BPF_PROG_TEST_RUN, bulk changes and memory per flow, and the cost of one
# TC change among 10,000 filters (of one mask, and ClassBench's) and of one
# nft change among 10,000 rules.
bench: deps build
	$(GO) test -run '^$$' -bench 'BenchmarkRate|BenchmarkBatch10K|BenchmarkClassBenchSearch' -benchtime 1x -v ./selftests/
	$(GO) test -run '^$$' -bench 'BenchmarkXDP|BenchmarkBulk10K|Benchmark1MFlows' -benchtime 3x ./maps/
	$(GO) test -run '^$$' -bench 'ChosenChange10K' -benchtime 50x ./maps/
	$(GO) test -run '^$$' -bench 'Mirror10K|MirrorSet10K|Decode10K|MirrorChange10K' -benchtime 20x ./flower/ ./internal/daemon/
	$(GO) test -run '^$$' -bench 'TCNotification10K' -benchtime 300x ./internal/daemon/
	$(GO) test -run '^$$' -bench 'NftChange10K' -benchtime 50x ./internal/daemon/

clean:
	rm -rf bin

# The binary, its man page, bash completion and systemd unit, under
# DESTDIR/PREFIX (the unit runs /usr/sbin/xdpflow: PREFIX=/usr).
PREFIX ?= /usr/local
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/sbin/xdpflow
	install -D -m 0644 docs/xdpflow.8 $(DESTDIR)$(PREFIX)/share/man/man8/xdpflow.8
	install -D -m 0644 scripts/xdpflow.bash-completion $(DESTDIR)$(PREFIX)/share/bash-completion/completions/xdpflow
	install -D -m 0644 packaging/xdpflow.service $(DESTDIR)$(PREFIX)/lib/systemd/system/xdpflow.service

# A .deb of what make install installs (PREFIX=/usr), built with dpkg-deb:
# build/xdpflow_VERSION_amd64.deb. DEBROOT is where it is staged.
DEBVERSION ?= 0.0~git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0)
DEBROOT ?= build/deb
DEBOUT ?= build
deb:
	rm -rf $(DEBROOT)
	$(MAKE) install DESTDIR=$(DEBROOT) PREFIX=/usr
	mkdir -p $(DEBROOT)/DEBIAN
	sed 's/@VERSION@/$(DEBVERSION)/' packaging/debian-control > $(DEBROOT)/DEBIAN/control
	dpkg-deb --root-owner-group --build $(DEBROOT) $(DEBOUT)/xdpflow_$(DEBVERSION)_amd64.deb

# The container image (packaging/image: no container engine needed), an
# archive for docker load or podman load: build/xdpflow-image.tar, named
# IMAGE. packaging/kubernetes/xdpflow.yaml runs it on every node.
IMAGE ?= xdpflow:$(shell git rev-parse --short HEAD 2>/dev/null || echo latest)
IMAGEOUT ?= build/xdpflow-image.tar
IMAGEBIN ?= build/image/xdpflow
image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(IMAGEBIN) ./cmd/xdpflow
	$(GO) run ./packaging/image -bin $(IMAGEBIN) -man docs/xdpflow.8 -tag $(IMAGE) -o $(IMAGEOUT)
