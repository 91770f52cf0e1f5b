# scrimp — the two commands a newcomer needs are `make demo` and `make test`.

GO       ?= go
GOBIN    := $(shell $(GO) env GOPATH)/bin
export PATH := $(PATH):$(GOBIN):/usr/sbin
VERSITYGW_VERSION := v1.8.0
# Pebble, Let's Encrypt's test ACME server, and its DNS server, for the
# ACME tests (internal/pebbletest).
PEBBLE_VERSION := v2.10.3
# staticcheck 2026.2.2 (module v0.8.2): the newest on the Go module proxy; knows Go 1.26.
STATICCHECK_VERSION := v0.8.2
# Packages the tests drive for real: nginx (with the stream module),
# HAProxy, systemd for `systemd-analyze verify` of the units, and
# Chromium (headless) for the status page.
APT_PACKAGES := nginx libnginx-mod-stream libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core haproxy systemd chromium
# nfpm builds the Debian package (`make deb`); run with `go run`, pinned here.
NFPM_VERSION := v2.48.0
# The version stamped on the binary and the package (packaging/version.sh:
# the nearest vX.Y.Z tag, else 0.0.0+gitN.HASH); `make deb VERSION=1.2.3`.
VERSION ?= $(shell packaging/version.sh)
GOARCH  ?= $(shell $(GO) env GOARCH)
# deb: where the package goes (its binary is built at bin/deb/scrimp).
DEB_DIR ?= dist
# install: GNU-style locations; DESTDIR is prepended to every one of them.
# The units read /etc/scrimp, so SYSCONFDIR does not follow PREFIX.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DOCDIR     ?= $(PREFIX)/share/doc/scrimp
SYSCONFDIR ?= /etc
DESTDIR    ?=

.PHONY: all build test demo bench deps deps-apt deps-go deps-nginx vet fuzz clean deb install uninstall

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
# HAProxy and gossip on loopback; several minutes), the per-backend request
# rate chart in bin/bench-scaling.svg, then the generator and catalog
# micro-benchmarks. `bin/scrimp-bench --quick` is a shorter run;
# `bin/scrimp-bench --rows seqjoin,chart` runs some groups of rows only.
bench: deps build
	bin/scrimp-bench --svg bin/bench-scaling.svg
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
# test, Pebble and pebble-challtestsrv for the ACME tests, and staticcheck
# for vet (reinstalled when not the pinned version).
deps-go:
	@command -v versitygw >/dev/null 2>&1 || { echo "installing versitygw $(VERSITYGW_VERSION)"; \
		$(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION); }
	@for c in pebble pebble-challtestsrv; do command -v $$c >/dev/null 2>&1 || { echo "installing $$c $(PEBBLE_VERSION)"; \
		$(GO) install github.com/letsencrypt/pebble/v2/cmd/$$c@$(PEBBLE_VERSION) || exit 1; }; done
	@staticcheck -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))' || { echo "installing staticcheck $(STATICCHECK_VERSION)"; \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); }

# deb: the Debian package, $(DEB_DIR)/scrimp_VERSION_ARCH.deb: a static
# binary, the systemd units, examples in /etc/scrimp/examples, the docs
# (packaging/nfpm.yaml; the user and state directory come from postinst).
deb:
	@case "$(VERSION)" in [0-9]*) ;; *) echo "VERSION '$(VERSION)' must start with a digit"; exit 1;; esac
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '-s -w -X main.version=$(VERSION)' \
		-o bin/deb/scrimp ./cmd/scrimp
	mkdir -p $(DEB_DIR)
	VERSION='$(VERSION)' GOARCH='$(GOARCH)' \
		$(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) package \
		--config packaging/nfpm.yaml --packager deb --target $(DEB_DIR)/

# install: for people who build from source (the package does the same
# and creates the scrimp user). Units get ExecStart=$(BINDIR)/scrimp.
install:
	$(GO) build -trimpath -ldflags '-X main.version=$(VERSION)' -o bin/scrimp ./cmd/scrimp
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/docs $(DESTDIR)$(DOCDIR)/examples \
		$(DESTDIR)$(SYSCONFDIR)/scrimp/examples/templates
	install -m 0755 bin/scrimp $(DESTDIR)$(BINDIR)/scrimp
	for u in scrimp-lb.service scrimp-backend.service; do \
		sed 's|/usr/bin/scrimp|$(BINDIR)/scrimp|' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 0644 config.example.json $(DESTDIR)$(SYSCONFDIR)/scrimp/examples/lb.json
	install -m 0644 examples/*.json $(DESTDIR)$(SYSCONFDIR)/scrimp/examples/
	install -m 0644 examples/templates/* $(DESTDIR)$(SYSCONFDIR)/scrimp/examples/templates/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/
	install -m 0644 systemd/scrimp-lb-external.conf $(DESTDIR)$(DOCDIR)/examples/
	@echo "installed scrimp $(VERSION) under $(DESTDIR)$(PREFIX); as root, once: create the service user and its state directory:"
	@echo "  useradd --system --user-group --home-dir /var/lib/scrimp --no-create-home --shell /usr/sbin/nologin scrimp"
	@echo "  install -d -o scrimp -g scrimp -m 0700 /var/lib/scrimp && chown root:scrimp /etc/scrimp && chmod 1770 /etc/scrimp"
	@echo "  systemctl daemon-reload"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/scrimp $(DESTDIR)$(UNITDIR)/scrimp-lb.service $(DESTDIR)$(UNITDIR)/scrimp-backend.service
	rm -rf $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/scrimp/examples

clean:
	rm -rf bin dist
