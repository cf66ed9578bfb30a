# hubforge: `make up` starts the platform, `make test` runs every test.
# Both create .venv and install everything from a clean checkout.
# Each person's server runs as their own account when the platform runs as root
# (spawner.local.isolation), so the platform's Python must be one other accounts can
# run: a Python under a private home (pyenv in /root) is not; the system's 3.11 is.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11 /usr/local/bin/python3.11) python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hubforge-installed
# Feast's own environment (hubforge/features/environment.py says why it is not .venv).
FEAST_VENV ?= $(VENV)-feast
FEAST_PY := $(FEAST_VENV)/bin/python
FEAST_STAMP := $(FEAST_VENV)/.hubforge-installed
CHP := node_modules/.bin/configurable-http-proxy
# hubforge's JupyterLab extension (labextension/), prebuilt and installed where the JupyterLab
# of people's servers (.venv's, hub/ starts .venv's jupyterhub-singleuser) finds prebuilt ones.
LABEXT := labextension
LABEXT_NODE := $(LABEXT)/node_modules/.hubforge-installed
LABEXT_BUILT := $(LABEXT)/dist/package.json
LABEXT_HOME := $(VENV)/share/jupyter/labextensions/@hubforge/labextension
# Browser tests drive Debian's Chromium (never a browser download).
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: install up test test-unit test-integration test-features test-platform test-jupyterhub \
	lane-1 lane-2 lane-3 lane-4 test-integration-governance test-integration-scheduler \
	test-integration-kernels test-integration-rest test-platform-shared test-platform-own bench lint dist clean

install: $(STAMP) $(FEAST_STAMP) $(CHP) $(LABEXT_HOME)/package.json

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e ".[test,dev]"
	# The tests' helm engine (helm lint of the chart with our values): Helm's Go library with
	# Python bindings. Its wheel asks for Python 3.12; the bindings (cffi) run on 3.11.
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python "helm-sdkpy==0.1.32"
	# The hub image's JupyterHub (the Zero to JupyterHub chart's line, images/hub/Dockerfile), for
	# the tests that run the platform on it (PYTHONPATH=$(VENV)/chart-hub): hubforge runs on it
	# and on 6.x.
	rm -rf $(VENV)/chart-hub
	$(PY) -m pip install --quiet --no-deps --target $(VENV)/chart-hub "jupyterhub==5.5.4"
	# An editable install skips data_files: enable the server extension as a wheel would.
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp server_extension/jupyter_server_config.d/hubforge.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	touch $@

$(FEAST_PY):
	$(PYTHON) -m venv $(FEAST_VENV)

$(FEAST_STAMP): $(FEAST_PY) requirements-feast.txt setup.cfg pyproject.toml
	$(FEAST_PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(FEAST_PY) -m pip install --quiet -r requirements-feast.txt
	# hubforge itself, without the platform's dependencies: only hubforge.features runs here.
	$(FEAST_PY) -m pip install --quiet --no-deps -e .
	touch $@

$(CHP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# npm ci, tsc and jupyter-builder run again only when the lockfile or the sources changed.
$(LABEXT_NODE): $(LABEXT)/package.json $(LABEXT)/package-lock.json
	cd $(LABEXT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(LABEXT_BUILT): $(LABEXT_NODE) $(LABEXT)/tsconfig.json $(wildcard $(LABEXT)/src/*.ts) | $(STAMP)
	rm -rf $(LABEXT)/lib
	cd $(LABEXT) && node_modules/.bin/tsc
	$(VENV)/bin/jupyter-builder build $(LABEXT)

# A copy, not a link into the checkout (as `jupyter-builder develop` makes): with the rest of
# .venv it is what people's accounts must be able to read.
$(LABEXT_HOME)/package.json: $(LABEXT_BUILT)
	rm -rf $(LABEXT_HOME)
	mkdir -p $(LABEXT_HOME)
	cp -R $(LABEXT)/dist/package.json $(LABEXT)/dist/static $(LABEXT_HOME)/
	chmod -R a+rX $(LABEXT_HOME)

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The demo feature repository first, one line a step (a second run only checks it).
up: install
	$(VENV)/bin/hubforge features apply
	$(VENV)/bin/hubforge up

# The tests in three layers (docs/testing.md), each its own pytest run, and JupyterHub's own
# tests, in four lanes side by side, each lane one layer or part of a layer after another:
#   1. the integration layer but the parts lanes 3 and 4 run;
#   2. the platform layer's modules on the shared platforms (one SQLite, one PostgreSQL),
#      then the features layer;
#   3. the unit layer, JupyterHub's tests, the integration layer's governance and audit
#      modules, its scheduler modules;
#   4. the platform layer's modules that start platforms of their own, then the integration
#      layer's kernel modules.
# The parts are chosen so that the lanes end together; with four lanes both cores are busy
# (about 90%), so what shortens the run now is less CPU, not another lane. Each lane's
# output is printed whole when it ends; a lane runs all its parts even when one fails, and
# `make test` fails if any part did. Each part prints its wall time; "no tests collected"
# (say, PYTEST_ARGS="-k ..." naming tests of one layer only) is no failure.
test: install $(CHROMIUM)
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory -j4 --output-sync=target lane-1 lane-2 lane-3 lane-4; \
	status=$$?; echo "all tests: $$(( $$(date +%s) - start )) s"; exit $$status

# The parts of the integration layer that lanes 3 and 4 run: the governance service and the
# audit trail (in-process services on their own databases); the scheduler; the kernel side
# of tracking (a real kernel each).
GOVERNANCE_TESTS := $(sort $(wildcard tests/integration/test_governance_*.py tests/integration/test_audit_*.py))
SCHEDULER_TESTS := $(sort $(wildcard tests/integration/test_scheduler_*.py))
KERNEL_TESTS := $(sort $(wildcard tests/integration/test_kernel_*.py))
# The platform layer's modules that start platforms of their own and never the shared ones.
OWN_PLATFORM_TESTS := $(addprefix tests/platform/,test_accounts.py test_chart_hub.py test_hub_restart.py \
	test_launcher.py test_tiers_local.py)

# $(call parts,TARGET ...): run each make target in turn, all of them whatever fails (a failure
# in one part must not hide another's), and fail if any failed.
define parts
	@status=0; for part in $(1); do $(MAKE) --no-print-directory $$part || status=1; done; exit $$status
endef

lane-1: test-integration-rest
lane-2:
	$(call parts,test-platform-shared test-features)
lane-3:
	$(call parts,test-unit test-jupyterhub test-integration-governance test-integration-scheduler)
lane-4:
	$(call parts,test-platform-own test-integration-kernels)

# The integration layer in parts (together: test-integration).
test-integration-governance: install
	$(call layer,integration,,$(GOVERNANCE_TESTS),governance and audit)

test-integration-scheduler: install
	$(call layer,integration,,$(SCHEDULER_TESTS),scheduler)

test-integration-kernels: install
	$(call layer,integration,,$(KERNEL_TESTS),kernels)

test-integration-rest: install
	$(call layer,integration,,tests/integration $(addprefix --ignore=,$(GOVERNANCE_TESTS) $(SCHEDULER_TESTS) \
	  $(KERNEL_TESTS)),the rest)

# The platform layer in two parts (together: test-platform).
test-platform-shared: install $(CHROMIUM)
	$(call layer,platform,,tests/platform $(addprefix --ignore=,$(OWN_PLATFORM_TESTS)),shared platforms)

test-platform-own: install $(CHROMIUM)
	$(call layer,platform,,$(OWN_PLATFORM_TESTS),own platforms)

# $(call layer,NAME[,PYTHON[,PATHS,PART]]): run tests/NAME (or PATHS, PART of it) with
# PYTEST_ARGS (in PYTHON's environment, else the platform's) and print "layer NAME: <seconds> s"
# ("layer NAME (PART): ..."), after pytest's list of the ten slowest tests (where the suite's
# time goes).
define layer
	@echo "$(or $(2),$(PY)) -m pytest --durations=10 $(or $(3),tests/$(1)) $(PYTEST_ARGS)"; start=$$(date +%s); status=0; \
	$(or $(2),$(PY)) -m pytest --durations=10 $(or $(3),tests/$(1)) $(PYTEST_ARGS) || status=$$?; \
	echo "layer $(1)$(if $(4), ($(4))): $$(( $$(date +%s) - start )) s"; \
	[ $$status -eq 0 ] || [ $$status -eq 5 ] || exit $$status
endef

# Pure tests: no processes, sockets, servers, kernels or databases (under a minute).
test-unit: install
	$(call layer,unit)

# One real component each: an MLflow server, a kernel, a jupyter-server, PostgreSQL ...
test-integration: install
	$(call layer,integration)

# The feature store with the real Feast, in Feast's environment (SQLite and the local Redis).
test-features: install
	$(call layer,features,$(FEAST_PY))

# The whole platform (hubforge up) and browser tests.
test-platform: install $(CHROMIUM)
	$(call layer,platform)

# JupyterHub's own spawner tests against the one-machine spawner, in a pytest of their own
# (JupyterHub's fixtures and pytest-jupyter's do not mix in one process).
test-jupyterhub: install
	@start=$$(date +%s); status=0; \
	PATH="$(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$$PATH" PYTHONPATH="$(CURDIR)/tests/contract" \
	  $(PY) -m pytest -c tests/contract/pytest.ini -p jupyterhub_spawner_adapter \
	  --pyargs jupyterhub.tests.test_spawner jupyterhub.tests.test_api jupyterhub.tests.test_singleuser \
	  || status=$$?; \
	echo "layer jupyterhub (contract): $$(( $$(date +%s) - start )) s"; exit $$status

bench: install
	$(PY) -m bench

# What the images (images/hub, images/user) are built from: the wheel in dist/ and the
# JupyterLab extension in labextension/dist (built by install).
dist: install
	rm -rf dist && $(PY) -m build --wheel --no-isolation --outdir dist .

# mypy cannot follow setup.cfg's package_dir, so it checks a tree of links laid out as the
# package is imported (hubforge/hub -> hub/, ...): every hubforge.* import is then typed
# instead of Any. Its messages name the files by their path in that tree.
TYPECHECK := build/typecheck
SUBPACKAGES := hub server_extension widgets spawner_profiles

lint: install
	$(VENV)/bin/ruff check hubforge $(SUBPACKAGES) tests bench
	$(VENV)/bin/ruff format --check hubforge $(SUBPACKAGES) tests bench
	rm -rf $(TYPECHECK)/hubforge && mkdir -p $(TYPECHECK)/hubforge
	ln -s $(CURDIR)/hubforge/* $(TYPECHECK)/hubforge/
	for folder in $(SUBPACKAGES); do ln -s $(CURDIR)/$$folder $(TYPECHECK)/hubforge/$$folder; done
	cd $(TYPECHECK) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/setup.cfg -p hubforge

clean:
	rm -rf build dist *.egg-info .pytest_cache $(LABEXT)/lib $(LABEXT)/dist
