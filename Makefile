# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both install what they need (a virtualenv with the Python packages, Kafka's jars from
# Maven Central) idempotently, then start what they need.
# The offline report's browser test needs Debian's Chromium (/usr/bin/chromium): `make chromium` installs it.
# The board tests run Grafana's own frontend code under Node: `make grafana-js` installs its npm packages.
# The invoice path's compiled batch core (native/, Rust with PyO3) is built by `make native` with cargo.
# Prometheus's promtool, prometheus, alertmanager and amtool (the pipeline's own health alerts, deploy/prometheus/)
# are built from their Go modules by `make prometheus` into the cache beside Kafka's jars: minutes once, then instant.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

NATIVE_SRC := native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*)
NATIVE_STAMP := $(VENV)/.native-$(shell cat $(NATIVE_SRC) 2>/dev/null | sha1sum | cut -c1-12)
GRAFANA_JS := tests/grafana_js
GRAFANA_JS_STAMP := $(GRAFANA_JS)/node_modules/.installed-$(shell cat $(GRAFANA_JS)/package-lock.json | sha1sum | cut -c1-12)

.PHONY: install native kafka prometheus chromium grafana-js demo test test-fast lint format bench fuzz chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Without cargo the worker still runs, on the Python reference path: said here, in its log and on /health.
# rustup finds its toolchains under $HOME/.rustup: with another home (CI's fresh one) it is told where they are,
# beside the cargo on PATH, as rustup installs them.
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SRC)
	@if ! cargo --version >/dev/null 2>&1 && command -v cargo >/dev/null 2>&1; then \
		export RUSTUP_HOME="$$(dirname "$$(dirname "$$(command -v cargo)")")/../.rustup"; \
	fi; \
	if cargo --version >/dev/null 2>&1; then \
		echo "building the compiled batch core (native/, Rust, release build: a minute or two the first time)"; \
		$(BIN)/python -m pip install --quiet ./native && rm -f $(VENV)/.native-* && touch $@; \
	else \
		echo "WARNING: cargo (Rust) is not installed: the compiled batch core is not built, and the worker"; \
		echo "         falls back to the Python reference path, several times slower (see its /health)."; \
		echo "         Install Rust (Debian: apt-get install cargo, or rustup) and run: make native"; \
	fi

native: $(NATIVE_STAMP)

kafka: install
	$(BIN)/einvoice-monitor broker install

prometheus: install
	$(BIN)/python -m deploy.prometheus.tools

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

demo: kafka native
	$(BIN)/einvoice-monitor demo

test: kafka native prometheus lint chromium grafana-js
	$(BIN)/python -m pytest

test-fast: kafka native prometheus chromium grafana-js
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: kafka native
	$(BIN)/python bench/suite.py

# libFuzzer (atheris) on the decoder and the validators; the corpus is seeded from the simulator when
# empty, and an input that breaks the contract is written to fuzz/crashes/. FUZZ_RUNS=-1: until stopped.
FUZZ_RUNS ?= 200000
fuzz: install native
	@mkdir -p fuzz/crashes
	$(BIN)/python -m fuzz.fuzz_decode_validate -runs=$(FUZZ_RUNS) -timeout=10 -print_final_stats=1 \
		-artifact_prefix=fuzz/crashes/ fuzz/corpus

# The chaos cases at full size (1 M events and 20 SIGKILLs, a 45 s broker outage, ClickHouse failing for
# a minute, a misbehaving webhook receiver); their fast variants run in `make test`. See docs/chaos.md.
chaos: kafka native
	EINVOICE_CHAOS=full $(BIN)/python -m pytest -m chaos -v --timeout=3600

clean:
	rm -rf .data .pytest_cache .ruff_cache
