# scrimp — the two commands a newcomer needs are `make demo` and `make test`.

GO       ?= go
GOBIN    := $(shell $(GO) env GOPATH)/bin
export PATH := $(PATH):$(GOBIN):/usr/sbin
VERSITYGW_VERSION := v1.8.0
# staticcheck 2026.2.2 (module v0.8.2): the newest on the Go module proxy; knows Go 1.26.
STATICCHECK_VERSION := v0.8.2
# Packages the tests drive for real: nginx (with the stream module), HAProxy, and
# Chromium (headless) for the status page.
APT_PACKAGES := nginx libnginx-mod-stream haproxy chromium

.PHONY: all build test demo bench deps deps-apt deps-go deps-nginx vet fuzz clean

all: build

# build: the daemon, and the benchmark beside it (it starts that scrimp).
build:
	$(GO) build -o bin/scrimp ./cmd/scrimp
	$(GO) build -o bin/scrimp-bench ./cmd/scrimp-bench

# demo: a load balancer with its own nginx and three backends on loopback.
demo: deps-nginx
	$(GO) run ./cmd/scrimp demo

# test: install what the tests need, then run every test (race detector on).
test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

vet: deps-go
	@out=$$(gofmt -l . | grep -v '^vendor/'); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	staticcheck ./...

# bench: one table of measured figures beside their targets (real nginx,
# HAProxy and gossip on loopback; a few minutes), then the generator and
# catalog micro-benchmarks. `bin/scrimp-bench --quick` is a shorter run.
bench: deps build
	bin/scrimp-bench
	$(GO) test -run '^$$' -bench . -benchmem ./generator/ ./catalog/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeMeta -fuzztime 60s ./catalog/
	$(GO) test -run '^$$' -fuzz FuzzRender -fuzztime 60s -fuzzminimizetime 50x ./generator/

deps: deps-apt deps-go

# deps-nginx: only nginx, for the demo.
deps-nginx:
	@if command -v nginx >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing nginx with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; \
	else \
		echo "nginx is missing: install it, e.g. 'sudo apt-get install -y nginx' (Debian/Ubuntu) or 'brew install nginx'"; exit 1; \
	fi

deps-apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "missing packages:$$missing — install them with: sudo apt-get install -y$$missing"; exit 1; \
	fi

# deps-go: versitygw, a real S3-protocol server for the seed integration
# test, and staticcheck for vet (reinstalled when not the pinned version).
deps-go:
	@command -v versitygw >/dev/null 2>&1 || { echo "installing versitygw $(VERSITYGW_VERSION)"; \
		$(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION); }
	@staticcheck -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))' || { echo "installing staticcheck $(STATICCHECK_VERSION)"; \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); }

clean:
	rm -rf bin
