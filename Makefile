# hubforge: `make up` starts the platform, `make test` runs every test.
# Both create .venv and install everything from a clean checkout.
# Each person's server runs as their own account when the platform runs as root
# (spawner.local.isolation), so the platform's Python must be one other accounts can
# run: a Python under a private home (pyenv in /root) is not; the system's 3.11 is.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11 /usr/local/bin/python3.11) python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hubforge-installed
CHP := node_modules/.bin/configurable-http-proxy
# Browser tests drive Debian's Chromium (never a browser download).
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: install up test test-jupyterhub test-unit test-platform bench lint clean

install: $(STAMP) $(CHP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ".[test,dev]"
	# An editable install skips data_files: enable the server extension as a wheel would.
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp server_extension/jupyter_server_config.d/hubforge.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	touch $@

$(CHP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

up: install
	$(VENV)/bin/hubforge up

test: install $(CHROMIUM)
	$(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-jupyterhub

# JupyterHub's own spawner tests against the one-machine spawner, in a pytest of their own
# (JupyterHub's fixtures and pytest-jupyter's do not mix in one process).
test-jupyterhub: install
	PATH="$(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$$PATH" PYTHONPATH="$(CURDIR)/tests/contract" \
	  $(PY) -m pytest -c tests/contract/pytest.ini -p jupyterhub_spawner_adapter \
	  --pyargs jupyterhub.tests.test_spawner jupyterhub.tests.test_api jupyterhub.tests.test_singleuser

bench: install
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check core hub server_extension widgets spawner_profiles tests bench
	$(VENV)/bin/ruff format --check core hub server_extension widgets spawner_profiles tests bench
	$(VENV)/bin/mypy core hub spawner_profiles

clean:
	rm -rf build dist *.egg-info .pytest_cache
