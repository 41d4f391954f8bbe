# Two entry points a new machine needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build that ships as a local wheel on our CI machines;
# an unpinned torch would pull a multi-GB CUDA build just to run tiny-model tests.
TORCH_PIN ?= torch==2.13.0
CLAUDE_CODE_VERSION ?= 2.1.328
CLAUDE_PREFIX ?= .cache/claude-code

.PHONY: venv oracle browser demo test test-fast bench claude-code claude-code-update validate clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,embeddings,ray]' '$(TORCH_PIN)'
	touch $@

venv: $(VENV)/.installed

# The oracle: NVIDIA's data-services code (the nvidia-tao-ds release of the image pinned in
# versions.yaml) in its own environment (it needs transformers<5), plus this package so our
# runner can also run on the very same library versions. Test-only; see tests/oracle/README.md.
ORACLE_VENV ?= .venv-oracle
ORACLE_PY := $(ORACLE_VENV)/bin/python
NVIDIA_TAO_DS = $(shell $(PYTHON) tests/oracle/release.py)

$(ORACLE_VENV)/.installed: versions.yaml tests/oracle/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(ORACLE_VENV)
	$(ORACLE_PY) -m pip install --quiet --upgrade pip
	$(ORACLE_PY) -m pip install --quiet 'nvidia-tao-ds==$(NVIDIA_TAO_DS)' -r tests/oracle/requirements.txt '$(TORCH_PIN)'
	$(ORACLE_PY) -m pip install --quiet --no-deps -e .
	$(ORACLE_PY) -m pip install --quiet jsonschema matplotlib
	touch $@

oracle: $(ORACLE_VENV)/.installed

demo: venv
	$(PY) scripts/demo.py

# Headless Chromium (Debian's package) for the results-page browser test.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium; }
	@chromium --version

# Everything, nothing skipped: the e2e tests need the claude binary, the parity tests the oracle,
# the results-page test a browser.
test: venv oracle claude-code browser
	$(PY) -m pytest -q

test-fast: venv oracle
	$(PY) -m pytest -q -m "not e2e and not slow"

# Heavy (the k-NN one holds ~3.5 GB); numbers go into the README's Benchmarks table.
bench: venv
	$(PY) benchmarks/bench_gap_analysis.py
	$(PY) benchmarks/bench_knn.py --action
	$(PY) benchmarks/bench_embeddings.py
	python3 benchmarks/bench_hooks.py

# The pinned Claude Code (what the plugin is checked on) and the newest release; the e2e tests
# run on both. The newest is re-resolved when the Makefile changes or by `make claude-code-update`.
CLAUDE_LATEST_PREFIX ?= .cache/claude-code-latest

$(CLAUDE_PREFIX)/node_modules/.bin/claude: Makefile
	npm install --no-audit --no-fund --prefix $(CLAUDE_PREFIX) @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	touch $@

$(CLAUDE_LATEST_PREFIX)/node_modules/.bin/claude: Makefile
	npm install --no-audit --no-fund --prefix $(CLAUDE_LATEST_PREFIX) @anthropic-ai/claude-code@latest
	touch $@

claude-code: $(CLAUDE_PREFIX)/node_modules/.bin/claude $(CLAUDE_LATEST_PREFIX)/node_modules/.bin/claude

claude-code-update:
	rm -rf $(CLAUDE_LATEST_PREFIX) && $(MAKE) claude-code

# --strict --profile directory: any error or warning (the plugin directory's too) fails.
# claude runs with a throwaway HOME so a developer's own settings never change the verdict.
validate: venv claude-code
	home=$$(mktemp -d) && trap 'rm -rf "$$home"' EXIT && \
	for target in . .claude-plugin/plugin.json; do \
	  HOME="$$home" $(CLAUDE_PREFIX)/node_modules/.bin/claude plugin validate --strict --profile directory "$$target" || exit 1; \
	done
	for d in skills/*/; do $(VENV)/bin/agentskills validate "$$d" || exit 1; done

clean:
	rm -rf $(VENV) $(ORACLE_VENV) demo_workspace .pytest_cache
