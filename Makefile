# Pochta: `make demo` runs a demo server (runtime packages only), `make test` runs lint,
# types and tests (adds the test tools).
# Both work on a fresh Debian machine that has only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian tools the interop tests drive (swaks, smtp-source from postfix, msmtp, curl,
# fetchmail, getmail6, opendkim-tools), and postgresql: the tests start a throwaway
# cluster of their own with its initdb and pg_ctl (tests/pgcluster.py);
# rspamd and clamav-daemon for the spam tests.
APT_PACKAGES := swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl postfix msmtp \
	curl fetchmail getmail6 opendkim-tools openssl sqlite3 iproute2 util-linux isync \
	mutt offlineimap3 postgresql \
	sieve-connect rspamd clamav-daemon dovecot-core dovecot-imapd systemd \
	chromium pebble \
	gcc python3-dev
DEMO_DIR := demo

.PHONY: all runtime venv deps test lint typecheck pytest demo clean bench native pure

# The IMAP hot path compiled to C by mypyc (mypy's compiler, used for mypy and black):
# the sources stay the Python they are; each module gets a compiled twin next to it,
# which Python imports instead. About a third fewer instructions per IMAP command
# (docs/performance.md §13 "Session 9"). src/pochta/.native lists the build;
# pochta/__init__.py removes a build older than its sources (an edit, a checkout), and
# Python runs the sources until `make native` builds again. `make pure` removes it.
# Left out: modules whose tests replace their functions (SORT, THREAD), exception
# classes with class-level defaults (proto/imap/errors.py), server/imap_notify.py (mypyc
# cannot compile its `continue` inside try/finally) and storage/sqlite.py (SQLiteStore
# has eight base classes; mypyc allows one).
NATIVE := proto/imap/bodystructure proto/imap/fetch proto/imap/framer proto/imap/mutf7 \
	proto/imap/parser proto/imap/response proto/imap/search proto/imap/selected \
	proto/imap/seqset proto/imap/session \
	server/imap server/imap_commands server/imap_mailbox server/imap_message \
	server/imap_session server/imap_shared server/imap_sieve \
	server/imap_cache mail/model mail/attachments storage/rules
NATIVE_STAMP := src/pochta/.native

# DNSSEC test zone (NSD, ldns-signzone) validated by unbound, for the DANE tests
APT_PACKAGES += unbound ldnsutils nsd

all: test

# Two stamps: the runtime (what `make demo` needs) and the test tools on top of it
# (pytest, mypy, ruff, ...: what `make test` needs).
$(BIN)/.runtime: pyproject.toml
	@# Debian's python3 needs python3-venv for `-m venv` (ensurepip)
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed: $(BIN)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# A failed build (no C compiler, no Python headers) leaves Python running the sources.
native: $(NATIVE_STAMP)
$(NATIVE_STAMP): Makefile $(BIN)/.installed $(NATIVE:%=src/pochta/%.py)
	@$(MAKE) --no-print-directory pure
	@echo "mypyc: compiling $(words $(NATIVE)) IMAP modules (a few minutes; log in build/native.log)"
	@mkdir -p build
	@# mypyc works in ./build of its directory (src): its C files and setup.py go after
	@if (cd src && ../$(BIN)/mypyc $(NATIVE:%=pochta/%.py)) > build/native.log 2>&1; then \
	  (cd src && ls $(NATIVE:%=pochta/%.*.so) *__mypyc.*.so) > $@; \
	  echo "mypyc: built $$(wc -l < $@) extension modules"; \
	else \
	  echo "mypyc: build failed (build/native.log): Pochta runs as pure Python"; \
	  $(MAKE) --no-print-directory pure; \
	fi
	@rm -rf src/build

pure:
	rm -f $(NATIVE_STAMP) src/*__mypyc.*.so
	find src/pochta -name '*.so' -delete

runtime: $(BIN)/.runtime

venv: $(BIN)/.installed

# Debian packages: installed only when one is missing (needs root or sudo).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# ruff, then the import contracts of .importlinter (layers, no cycles; docs/ARCHITECTURE.md)
lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# Everything on SQLite (the storage conformance suite on both backends), then the
# end-to-end, IMAP and queue tests again with the store on PostgreSQL.
pytest: venv deps native
	$(BIN)/pytest -q
	POCHTA_TEST_BACKEND=postgresql $(BIN)/pytest -q tests/e2e tests/imap tests/queue \
	  tests/transfer/test_backup.py

test: venv deps lint typecheck pytest

demo: runtime
	$(BIN)/pochta demo --dir $(DEMO_DIR)

bench: venv deps
	bench/run_smtp_bench.sh

clean: pure
	rm -rf $(VENV) $(DEMO_DIR) .mypy_cache .pytest_cache .ruff_cache build src/build
