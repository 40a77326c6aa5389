# The two set-up commands of the README: `make run` and `make test`.

PYTHON ?= python3
VENV ?= venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-deps lint bench clean docs screenshots

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Orbited on the embedded default: HTTP on 127.0.0.1:8000, the built-in STOMP broker on
# :61613, test echo servers and the demo pages at /demos/.
# Started as root, Orbited drops to the demo config's `user = nobody`.  A clone nobody cannot
# read (one under root's 0700 home) would then answer 404 to every page, so there the demo
# keeps root, from a copy of the config beside it that says so (it listens on loopback only).
DEMO_CFG ?= etc/demo.cfg
AS_ROOT_CFG := $(dir $(DEMO_CFG)).demo-as-root.cfg
run: install
	@cfg=$(DEMO_CFG); \
	if [ "$$(id -u)" = 0 ] && command -v runuser >/dev/null && \
			! runuser -u nobody -- test -r "$(CURDIR)/orbited/static/Orbited.js" 2>/dev/null; then \
		echo "make run: user nobody cannot read $(CURDIR), so the demo runs as root (on loopback only)"; \
		sed 's/^user = nobody$$/user = root/' $(DEMO_CFG) > $(AS_ROOT_CFG); \
		cfg=$(AS_ROOT_CFG); \
	fi; \
	exec $(BIN)/orbited --config $$cfg

# Installs what the tests need (Debian packages, npm packages), then runs all of them.
test: install test-deps lint
	$(BIN)/pytest

test-deps: install
	.ci/test-deps

lint: install
	$(BIN)/ruff check orbited tests bench

# Benchmarks against the peers; results in bench/results/, tables and plots in docs/performance.md.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--quick --only ws_proxy".
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) tests/.work bench/.work *.egg-info

# Regenerate the [global] table of docs/configuration.md from the code.
docs: install
	$(BIN)/python -m orbited.docs

# Refresh docs/screenshots/ from the example tests (they otherwise write to tests/.work/).
screenshots: install
	ORBITED_SCREENSHOTS=docs $(BIN)/pytest tests/test_examples.py
