# flairgw — one top-level Makefile.
#
# Each room lists its own sources in ROOM/module.mk (explicit lists, no
# wildcards), so adding a file is a one-line change in the room that owns it.
# Every library comes through pkg-config. Builds go to $(BUILD):
#   build/        optimised, what `make run` starts
#   build/asan/   AddressSanitizer + UBSan, what `make test` runs
# Top-level targets first make sure the Debian packages are there (installing
# them when run as root), then re-enter make so pkg-config sees them.

PKGS  := libevent libevent_pthreads libevent_openssl libsodium openssl libcurl sqlite3 libcjson libpq
DEBS  := pkg-config libevent-dev libsodium-dev libssl-dev libcurl4-openssl-dev libsqlite3-dev libcjson-dev libpq-dev sqlite3 python3 openssl
BUILD ?= build
SAN   ?= 0
# What --version prints (flairgw, flairctl).
VERSION := 0.3.0

CC ?= cc
WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wformat=2 -Wno-format-nonliteral -Wpointer-arith -Wvla -Werror
CPPFLAGS += -I. -D_GNU_SOURCE -MMD -MP
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -fno-strict-aliasing -fstack-protector-strong $(WARN)
LDLIBS += -lpthread -lm

ifeq ($(SAN),1)
override BUILD := $(BUILD)/asan
CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=undefined $(filter-out -O2 -g,$(CFLAGS))
LDFLAGS += -fsanitize=address,undefined
endif

ifneq ($(MAKECMDGOALS),deps)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
endif
CPPFLAGS += $(PKG_CFLAGS)
LDLIBS   := $(PKG_LIBS) $(LDLIBS)

include core/module.mk
include crypto/module.mk
include store/module.mk
include processors/module.mk
include rules/module.mk
include pipeline/module.mk
include gateway/module.mk
include tools/module.mk
include tests/module.mk

# Rooms in link order: a room may use only the rooms after it.
ROOMS := gateway pipeline rules processors store cryptoauth crypto core
SRC_gateway    := $(GATEWAY_SRC)
SRC_pipeline   := $(PIPELINE_SRC)
SRC_rules      := $(RULES_SRC)
SRC_processors := $(PROC_SRC)
SRC_store      := $(STORE_SRC)
SRC_crypto     := $(CRYPTO_SRC)
SRC_cryptoauth := $(CRYPTO_AUTH_SRC)
SRC_core       := $(CORE_SRC)
LIB_SRC  := $(foreach r,$(ROOMS),$(SRC_$(r)))
roomlibs  = $(foreach r,$(1),$(BUILD)/lib$(r).a)
objs_of   = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
ALL_LIBS := $(call roomlibs,$(ROOMS))

BINS := $(BUILD)/flairgw $(BUILD)/flairctl $(BUILD)/flair-sandbox

.PHONY: all deps build-all run test test-build bench fuzz clean format format-check man install test-deps web
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory build-all

deps:
	@sh tools/deps.sh $(DEBS) -- $(PKGS)

build-all: $(BINS)

$(BUILD)/obj/gateway/main.o $(BUILD)/obj/tools/flairctl.o: CPPFLAGS += -DFGW_VERSION='"$(VERSION)"'

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

.SECONDARY:
.SECONDEXPANSION:
$(BUILD)/lib%.a: $$(call objs_of,$$(SRC_$$*))
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/flairgw: $(BUILD)/obj/gateway/main.o $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/flairctl: $(TOOLS_CTL_SRC:%.c=$(BUILD)/obj/%.o) $(ALL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/flair-sandbox: $(TOOLS_SANDBOX_SRC:%.c=$(BUILD)/obj/%.o) $(call roomlibs,$(SANDBOX_ROOMS))
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit test binaries: tests/unit/test_X.c -> $(BUILD)/tests/test_X, linked
# with the rooms tests/module.mk lists for it (ROOMS_test_X, link order).
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $$(call roomlibs,$$(ROOMS_$$*))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

UNIT_BINS := $(UNIT_TESTS:tests/unit/%.c=$(BUILD)/tests/%)

# flairgw's Stripe-Signature verdicts, for the comparison with Stripe's
# own library (tests/integration/test_stripe_signatures.py).
$(BUILD)/stripe-sigcheck: $(BUILD)/obj/tests/stripe_sigcheck.o $(call roomlibs,cryptoauth core)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# store/pg.c against a real PostgreSQL server: run by
# tests/integration/test_pg.py, which starts the server (not by
# tests/run.sh, so it lives outside $(BUILD)/tests).
$(BUILD)/pg-tests/test_pg: $(BUILD)/obj/tests/unit/test_pg.o $(call roomlibs,store core)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

test-build: $(BINS) $(UNIT_BINS) $(BUILD)/stripe-sigcheck $(BUILD)/pg-tests/test_pg

# make run [PORT=8080] [SANDBOX_PORT=8081] [MAIL_PORT=8025]
PORT ?= 8080
SANDBOX_PORT ?= 8081
MAIL_PORT ?= 8025
run: deps web
	@$(MAKE) --no-print-directory build-all
	@PORT=$(PORT) SANDBOX_PORT=$(SANDBOX_PORT) MAIL_PORT=$(MAIL_PORT) sh tools/run-dev.sh

# s3rver (a local S3-compatible server) for the backup upload test,
# Stripe's Node library, the reference flairgw's webhook signature check is
# compared with, libsodium-wrappers (bundled into flair.js), puppeteer-core
# (drives Debian's chromium in the browser tests) and an OpenAPI 3
# validator for docs/openapi.yaml;
# installed project-locally with npm when missing, in one command (npm
# prunes what a later install does not name).
S3RVER := build/npm/node_modules/.bin/s3rver
STRIPE_NODE := build/npm/node_modules/stripe/package.json
SODIUM_NODE := build/npm/node_modules/libsodium-wrappers/package.json
PUPPETEER := build/npm/node_modules/puppeteer-core/package.json
SWAGGER_PARSER := build/npm/node_modules/@apidevtools/swagger-parser/package.json
$(S3RVER) $(STRIPE_NODE) $(SODIUM_NODE) $(PUPPETEER) $(SWAGGER_PARSER) &:
	@sh tools/deps.sh nodejs npm -- -- npm
	npm install --no-audit --no-fund --prefix build/npm s3rver@3.7.1 stripe@23.2.0 \
	    libsodium-wrappers@0.8.4 puppeteer-core@24.10.0 @apidevtools/swagger-parser@10.1.0

# build/web: flair.js with libsodium's JavaScript build (ISC licence, its
# text at the top) in front of web/flair.js, and the development demo.
# Generated, never committed: 1 MB of someone else's compiled code.
SODIUM_DIST := build/npm/node_modules/libsodium/dist/modules/libsodium.js \
               build/npm/node_modules/libsodium-wrappers/dist/modules/libsodium-wrappers.js
WEB_DEMO := build/web/demo/index.html build/web/demo/demo.js build/web/demo/demo.css
build/web/flair.js: web/flair.js $(SODIUM_NODE)
	@mkdir -p $(dir $@)
	{ printf '/*! flair.js bundles libsodium.js and libsodium-wrappers %s (npm), ISC licence:\n' \
	      "$$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' $(SODIUM_NODE))"; \
	  sed 's|\*/|* /|g' build/npm/node_modules/libsodium-wrappers/LICENSE; printf '*/\n'; \
	  cat $(SODIUM_DIST); printf '\n'; cat web/flair.js; } >$@.tmp && mv $@.tmp $@
build/web/demo/%: web/demo/%
	@mkdir -p $(dir $@)
	cp $< $@
web: build/web/flair.js $(WEB_DEMO)

# Test-only Debian tools: the man page lint, promtool for /metrics and
# the alert rules, chromium for the browser tests, aiosmtpd (a real SMTP
# server) for the e-mail tests, and the JSON Schema validator that checks
# the answers of the integration tests against docs/openapi.yaml, and
# Debian's PostgreSQL server (the harness runs its initdb and pg_ctl; the
# version the tests need is the one Debian 12 ships; the integration suite
# runs on it as well as on SQLite), and haproxy, the load balancer in
# front of two gateways in tests/integration/test_multi_instance.py.
PG_BIN := /usr/lib/postgresql/15/bin
test-deps:
	@sh tools/deps.sh mandoc prometheus chromium python3-aiosmtpd python3-jsonschema \
	    python3-yaml postgresql haproxy -- -- mandoc promtool chromium aiosmtpd py:jsonschema \
	    py:yaml psql $(PG_BIN)/initdb $(PG_BIN)/pg_ctl /usr/sbin/haproxy

test: deps test-deps $(S3RVER) $(STRIPE_NODE) $(PUPPETEER) $(SWAGGER_PARSER) web
	@$(MAKE) --no-print-directory SAN=1 test-build
	@sh tests/run.sh $(BUILD)/asan

# One unit test alone: make unit-test_crypto [SAN=1] [BUILD=dir]
unit-%: deps
	@$(MAKE) --no-print-directory $(BUILD)/tests/$*
	$(BUILD)/tests/$*

bench: deps
	@$(MAKE) --no-print-directory build-all $(BUILD)/bench-rules $(BUILD)/bench-seal
	@BUILD=$(BUILD) sh tools/bench.sh

# Long fuzzing runs: every target FUZZ_SECONDS (default 60) each; `make test`
# runs the same targets for 20 s each.
fuzz: deps
	@sh tests/fuzz/run.sh

# The rules engine benchmark: decisions/s for etc/rules.conf alone and with
# 1,000 more rules (tools/bench.sh can run $(BUILD)/bench-rules itself).
.PHONY: bench-rules
$(BUILD)/bench-rules: $(BUILD)/obj/tests/bench_rules.o $(call roomlibs,rules core)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench-rules: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench-rules
	$(BUILD)/bench-rules etc/rules.conf

# The floor of the sealed-card path: one crypto_box_seal_open on this CPU
# (tools/bench.sh runs it and sets it against plain's CPU per payment).
$(BUILD)/bench-seal: $(BUILD)/obj/tests/bench_seal.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc]: binaries,
# man pages (the directive and command lists come from the binaries' own
# tables), the systemd unit pointing at them, configuration templates
# (never over an existing flairgw.conf) and the docs.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR     := $(PREFIX)/bin
MANDIR     := $(PREFIX)/share/man
DOCDIR     := $(PREFIX)/share/doc/flairgw
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANPAGES   := $(BUILD)/man/flairgw.8 $(BUILD)/man/flairctl.8 $(BUILD)/man/flairgw.conf.5

man: $(MANPAGES)

$(BUILD)/man/flairgw.conf.5: docs/man/flairgw.conf.5.in $(BUILD)/flairgw
	@mkdir -p $(dir $@)
	$(BUILD)/flairgw --directives-mdoc >$@.list
	sed -e '/^@DIRECTIVES@$$/{r $@.list' -e 'd}' -e 's|@DOCDIR@|$(DOCDIR)|g' $< >$@
	@rm -f $@.list

$(BUILD)/man/flairctl.8: docs/man/flairctl.8.in $(BUILD)/flairctl
	@mkdir -p $(dir $@)
	$(BUILD)/flairctl --commands-mdoc >$@.list
	sed -e '/^@COMMANDS@$$/{r $@.list' -e 'd}' -e 's|@DOCDIR@|$(DOCDIR)|g' $< >$@
	@rm -f $@.list

$(BUILD)/man/flairgw.8: docs/man/flairgw.8.in
	@mkdir -p $(dir $@)
	sed -e 's|@DOCDIR@|$(DOCDIR)|g' $< >$@

install: all
	@$(MAKE) --no-print-directory man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/flairgw/lists
	install -m 0755 $(BINS) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(BUILD)/man/flairgw.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(BUILD)/man/flairgw.8 $(BUILD)/man/flairctl.8 $(DESTDIR)$(MANDIR)/man8/
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/etc/flairgw/|$(SYSCONFDIR)/flairgw/|g' \
	    etc/flairgw.service >$(DESTDIR)$(UNITDIR)/flairgw.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/flairgw.service
	install -m 0644 README.md docs/*.md docs/openapi.yaml etc/flairgw.production.conf \
	    etc/flairgw.logrotate $(DESTDIR)$(DOCDIR)/
	install -m 0600 etc/flairgw.production.conf $(DESTDIR)$(SYSCONFDIR)/flairgw/flairgw.conf.example
	install -d $(DESTDIR)$(SYSCONFDIR)/flairgw/mail
	for f in rules.conf bins.csv $(patsubst etc/%,%,$(wildcard etc/lists/*.txt)) \
	    $(patsubst etc/%,%,$(wildcard etc/mail/*.txt etc/mail/*.html)); do \
	    [ -e $(DESTDIR)$(SYSCONFDIR)/flairgw/$$f ] || \
	        install -m 0644 etc/$$f $(DESTDIR)$(SYSCONFDIR)/flairgw/$$f || exit 1; \
	done

# The tracked C sources and headers (every .c/.h outside build/ when this
# is not a git checkout), formatted as .clang-format says.
CLANG_FORMAT ?= clang-format
FORMAT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null || \
                     find . -name build -prune -o -name '*.[ch]' -print)
format:
	$(CLANG_FORMAT) -i $(FORMAT_SRC)
# Changes nothing; fails (and names the lines) when a file is not formatted.
format-check:
	$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_SRC)

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# make -s print-VAR prints a variable (used by tests/fuzz/run.sh).
print-%:
	@echo $($*)
