# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both install what they need (a virtualenv with the Python packages, Kafka's jars from
# Maven Central) idempotently, then start what they need.
# The offline report's browser test needs Debian's Chromium (/usr/bin/chromium): `make chromium` installs it.
# The board tests run Grafana's own frontend code under Node: `make grafana-js` installs its npm packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

GRAFANA_JS := tests/grafana_js
GRAFANA_JS_STAMP := $(GRAFANA_JS)/node_modules/.installed-$(shell cat $(GRAFANA_JS)/package-lock.json | sha1sum | cut -c1-12)

.PHONY: install kafka chromium grafana-js demo test test-fast lint format bench fuzz chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

kafka: install
	$(BIN)/einvoice-monitor broker install

# Debian's package, not `playwright install`: the test drives it through playwright's executable_path.
chromium:
	@test -x /usr/bin/chromium || { export DEBIAN_FRONTEND=noninteractive; apt-get update && \
		apt-get install -y --no-install-recommends chromium; }

# Grafana 11.6's @grafana/scenes and @grafana/data, exactly as package-lock.json pins them (~600 MB, a minute)
$(GRAFANA_JS_STAMP): $(GRAFANA_JS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 with npm (Debian: apt-get install nodejs npm)"; exit 1; }
	cd $(GRAFANA_JS) && npm ci --no-audit --no-fund --loglevel=error
	@rm -f $(GRAFANA_JS)/node_modules/.installed-* && touch $@

grafana-js: $(GRAFANA_JS_STAMP)

demo: kafka
	$(BIN)/einvoice-monitor demo

test: kafka lint chromium grafana-js
	$(BIN)/python -m pytest

test-fast: kafka chromium grafana-js
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: kafka
	$(BIN)/python bench/suite.py

# libFuzzer (atheris) on the decoder and the validators; the corpus is seeded from the simulator when
# empty, and an input that breaks the contract is written to fuzz/crashes/. FUZZ_RUNS=-1: until stopped.
FUZZ_RUNS ?= 200000
fuzz: install
	@mkdir -p fuzz/crashes
	$(BIN)/python -m fuzz.fuzz_decode_validate -runs=$(FUZZ_RUNS) -timeout=10 -print_final_stats=1 \
		-artifact_prefix=fuzz/crashes/ fuzz/corpus

# The chaos cases at full size (1 M events and 20 SIGKILLs, a 45 s broker outage, ClickHouse failing for
# a minute, a misbehaving webhook receiver); their fast variants run in `make test`. See README, Chaos.
chaos: kafka
	EINVOICE_CHAOS=full $(BIN)/python -m pytest -m chaos -v --timeout=3600

clean:
	rm -rf .data .pytest_cache .ruff_cache
