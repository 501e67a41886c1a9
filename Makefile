# warren: the README's two commands are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/warren
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
CACHE_DIR ?= /var/cache/warren
LISTEN ?= :3142
# Peer discovery for `make run`: off, so that a warren started by hand on a
# development or CI machine sends nothing to the LAN. On a real site use
# `make run DISCOVERY=mdns` (or static with ARGS="--peer host:3142").
DISCOVERY ?= off
ARGS ?=
FUZZTIME ?= 30s
KEEP ?= 0
# Debian packages the end-to-end tests drive: apt-ftparchive, dpkg-deb, gpg, xz,
# dnf with its download plugin, createrepo_c, rpmbuild, NuGet.exe on mono;
# ip, tc, curl and python3 for the network-namespace site test; tcpdump for
# the capture that shows no token crosses the site in clear; chromium for
# the status page test.
TEST_DEBS := apt-utils dpkg-dev gnupg xz-utils gzip ca-certificates \
	dnf dnf-plugins-core createrepo-c rpm nuget iproute2 curl python3 tcpdump chromium

.PHONY: all build run test test-netns test-netns50 test-pkg test-deps check-go lint vet fuzz bench bench-deps sim clean deb rpm pkg-bin

all: build

check-go:
	@command -v $(GO) >/dev/null || { echo "warren needs Go (1.26 or newer) on PATH, e.g. /usr/local/go/bin" >&2; exit 1; }

build: check-go
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/warren

PKG_VERSION ?= 0.1.0-dev.$(shell git rev-parse --short=8 HEAD 2>/dev/null || echo 0)
PKG_ARCH ?= $(shell $(GO) env GOARCH 2>/dev/null || echo amd64)
NFPM := $(GO) tool -modfile=tools/go.mod nfpm

# Packages, built with nfpm (no dpkg-buildpackage or rpmbuild): dist/*.deb, dist/*.rpm.
# pkg-bin is phony: make runs it once however many packages depend on it.
# Each packager first drops its older packages, so dist/ holds exactly one
# of each kind (the package test relies on that).
pkg-bin: check-go
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/warren

deb rpm: pkg-bin
	mkdir -p dist
	rm -f dist/*.$@
	VERSION=$(PKG_VERSION) ARCH=$(PKG_ARCH) $(NFPM) package --config packaging/nfpm.yaml --packager $@ --target dist/

# Build and run the daemon in the foreground. Point apt at it with
#   echo 'Acquire::http::Proxy "http://127.0.0.1:3142";' > /etc/apt/apt.conf.d/30warren
run: build
	./$(BIN) serve --listen $(LISTEN) --cache-dir $(CACHE_DIR) --discovery $(DISCOVERY) $(ARGS)

# Everything CI runs: install the test tools, lint, then every test with the
# race detector, the real apt-get end to end included (and the allocation
# tests again without it: it makes sync.Pool drop what it is given).
test: test-deps lint
	WARREN_E2E=1 $(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -count=1 -run 'Allocat' ./proxy
	$(MAKE) --no-print-directory test-netns
	$(MAKE) --no-print-directory test-netns50
	$(MAKE) --no-print-directory test-pkg
	$(MAKE) --no-print-directory fuzz

# Build both packages, install the .deb on this machine (root), drive apt
# through its auto-detect helper with warren up and down, purge; check the
# .rpm with rpm -qip/-qlp. Says SKIP when not root.
# The machine's package state is one: a second `make test` beside this one
# waits for the lock (flock, util-linux) instead of installing or purging
# warren under it.
MACHINE_LOCK := $(if $(filter 0,$(shell id -u)),flock /var/lock/warren-make-test.lock)
test-pkg: deb rpm
	WARREN_PKG=1 $(MACHINE_LOCK) $(GO) test -count=1 -v -timeout 10m -run '^TestPackages$$' ./cmd/warren 2>&1 | grep -Ev '^\s*time=|^=== RUN'; exit $${PIPESTATUS[0]}

# Five warren hosts and a 50 Mbit/s upstream in network namespaces (real
# mDNS and UDP broadcast, which never leave them), a site of six nodes
# behind a hub, a preload-only hub, and a chain of replicating hubs (main,
# secondary, spoke) with a node installing with every WAN link down, an
# https repository, dnf's metalink and mirror list repositories over
# three mirrors (a node, a hub, a replicated spoke, then offline), a hub
# refusing a hostile mirror's re-signed InRelease for its site, a hub over
# https with a capture on the bridge, peers over mutual TLS, an IPv6-only
# site and a dual-stack one; needs root and ip, and says SKIP otherwise.
# Prints the WAN ratio, the time ratio, the hub's RSS, each replication
# run and the WAN bytes per file.
test-netns: check-go
	WARREN_NETNS=1 $(GO) test -count=1 -v -timeout 25m -run '^(TestSiteOverNetns|TestHubSiteOverNetns|TestPreloadSiteOverNetns|TestReplicationOverNetns|TestHTTPSRepositoryOverNetns|TestMirrorGroupsOverNetns|TestSignaturesOverNetns|TestHubTLSOverNetns|TestIPv6SiteOverNetns|TestDualStackSiteOverNetns|TestPeerTLSOverNetns)$$' ./cmd/warren 2>&1 | grep -Ev '^\s*time=|^=== RUN'; exit $${PIPESTATUS[0]}

# The site test with fifty hosts (about a minute: fifty daemons on two
# cores, the slow-node case): prints the WAN's multiple of the artifact,
# the last client's time and the idle daemons' CPU; asserts every file
# exact and the WAN at most 3 times it.
test-netns50: check-go
	WARREN_NETNS50=1 $(GO) test -count=1 -v -timeout 15m -run '^TestSite50OverNetns$$' ./cmd/warren 2>&1 | grep -Ev '^\s*time=|^=== RUN|netns_test.go:[0-9]+: h[0-9]+: from'; exit $${PIPESTATUS[0]}

test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		$(MACHINE_LOCK) sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends $(TEST_DEBS) >/dev/null'; \
	else \
		echo "make test: not root or no apt-get; assuming $(TEST_DEBS) are installed" >&2; \
	fi

vet: check-go
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted" >&2; exit 1; fi
	$(GO) vet ./...

lint: vet
	$(GO) run $(STATICCHECK) ./...

# Run every fuzzer (each parser, the datagram decoder) for FUZZTIME each,
# seeded by the committed corpus (<pkg>/testdata/fuzz/); prints how long
# each ran, its executions and new inputs. KEEP=1 copies what a run found
# into testdata/fuzz, to commit; a failing input lands there regardless.
fuzz: check-go
	GO=$(GO) FUZZTIME=$(FUZZTIME) KEEP=$(KEEP) tools/fuzz.sh

# Hit throughput (20 MB, MB/s), small-file hits (req/s), the first-byte time
# a miss adds (lone node, LAN where nobody has it), peer upload rate against
# its limit, daemon RSS, learning a real-size Packages.xz (time against
# xz -dc, peak RSS), a hub and a node learning an archive-shaped site (each
# one's peak RSS), 200 clients downloading beside 480 slow readers (peak
# RSS, served and refused), a cold apt-get install of 100 small packages against
# direct (needs the test tools: make test-deps).
bench: check-go bench-deps
	$(GO) test -run '^$$' -bench ServeHit -benchtime 3s ./proxy
	$(GO) test -run '^$$' -bench MissFirstByte -benchtime 150x ./proxy
	$(GO) test -run '^$$' -bench UploadRate -benchtime 3x ./peering
	$(GO) test -run '^$$' -bench 'DaemonRSS|IndexLearning|SiteLearning|ClientLoad|ColdAptInstall' -benchtime 1x ./cmd/warren
	$(GO) test -run '^$$' -bench SideBySide -benchtime 1x -timeout 20m ./cmd/warren

# A simulated site (package sim): 1,000 real warren nodes in 20 subnets
# behind one hub, over an in-memory network, each asking for an artifact
# at a random moment within 60 s: on idle machines, then on slow ones
# (scheduling delay 0-500 ms, heavy-tailed, and 2% of datagrams lost);
# then three artifacts at once on the slow ones, whose first requesters
# share the links. Each prints the origin's and the hub's fetches, each
# subnet's WAN bytes, failures and the completion times against one lone
# download. SIM_FLAGS changes every run's site (go run ./cmd/warren-sim -h
# lists the flags; a flag given twice takes the last).
sim: check-go
	$(GO) build -o bin/warren-sim ./cmd/warren-sim
	./bin/warren-sim -artifacts 1 $(SIM_FLAGS)
	./bin/warren-sim -artifacts 1 -delay 500ms -loss 0.02 $(SIM_FLAGS)
	./bin/warren-sim -artifacts 3 -delay 500ms -loss 0.02 $(SIM_FLAGS)

# nginx and apt-cacher-ng for the side-by-side bench, run on loopback with
# private configs by the bench itself: installed with their services kept
# from starting (a policy-rc.d for the length of the install), so nothing
# takes port 80 or 3142 on the machine.
BENCH_DEBS = nginx apt-cacher-ng
bench-deps:
	@if command -v nginx >/dev/null && command -v apt-cacher-ng >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		$(MACHINE_LOCK) sh -c 'set -e; \
			if [ ! -e /usr/sbin/policy-rc.d ]; then printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; trap "rm -f /usr/sbin/policy-rc.d" EXIT; fi; \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends $(BENCH_DEBS) >/dev/null'; \
	else \
		echo "make bench: not root or no apt-get; the side-by-side bench needs $(BENCH_DEBS) and skips without them" >&2; \
	fi

clean:
	rm -rf bin dist
