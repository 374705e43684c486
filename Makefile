# Two commands do everything on a fresh machine:
#   make serve   set up, then run voicewire (today: the relay)
#   make test    set up what the tests need, then run every test (what CI runs)

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEV_SECRETS := .voicewire/routing-secrets

.PHONY: setup serve test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

$(DEV_SECRETS):
	mkdir -p $(dir $@)
	umask 077 && $(PY) -c "import secrets; print('1:' + secrets.token_hex(32))" > $@
	@echo "made a development routing secret in $@"

serve: setup $(DEV_SECRETS)
	@echo "voicewire relay: UDP 127.0.0.1:3478, metrics at http://127.0.0.1:9478/metrics (Ctrl-C stops)"
	$(VENV)/bin/voicewire relay --listen 127.0.0.1:3478 --internal 127.0.0.1:3479 \
		--metrics 127.0.0.1:9478 --secrets-file $(DEV_SECRETS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/relay_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache benchmarks/.build
