# Two commands do everything on a fresh machine:
#   make serve   set up, then run voicewire on this machine and print the URL to open
#   make test    set up what the tests need, then run every test (what CI runs)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# One venv; what is installed in it is stamped per pyproject.toml version: the package alone for
# `make serve`, with its test extras (browsers' driver, aiortc, kubectl, …) for `make test`.
VERSION := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUNTIME_STAMP := $(VENV)/.runtime-$(VERSION)
TEST_STAMP := $(VENV)/.test-$(VERSION)
# Debian packages: libopus for the codec at run time; Chromium, espeak-ng and sox for the tests
# (a real browser, and speech fixtures made offline); redis-server for the cluster tests'
# registry; nftables and conntrack for the network-namespace test bed's load balancer.
RUNTIME_PACKAGES := libopus0
TEST_PACKAGES := $(RUNTIME_PACKAGES) chromium espeak-ng sox redis-server nftables conntrack
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup setup-runtime serve test bench clean runtime-packages test-packages

setup-runtime: $(RUNTIME_STAMP)

setup: $(TEST_STAMP)

$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	rm -f $(VENV)/.runtime-* $(VENV)/.test-* $(VENV)/.installed-*
	touch $@

$(TEST_STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

runtime-packages:
	@$(call debian,$(RUNTIME_PACKAGES))

test-packages:
	@$(call debian,$(TEST_PACKAGES))

# Install the Debian packages in $(1) that are missing (apt-get only when something is).
define debian
missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
if [ -n "$$missing" ]; then \
	echo "installing Debian packages:" $$missing; \
	$(SUDO) apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
fi
endef

serve: setup-runtime runtime-packages
	$(VENV)/bin/voicewire serve

test: setup test-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/relay_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache benchmarks/.build
