# The two commands the README names: `make demo` (main job) and `make test` (every test).
# Both set up a virtualenv in .venv from scratch on a fresh machine; nothing global is touched
# except the apt packages and the Docker engine that the test stack needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := $(CURDIR)/.demo

.PHONY: demo test unit-coverage setup lint bench reliability clean

$(BIN)/dsdt: setup.py pyproject.toml pipes/setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./pipes
	touch $@

setup: $(BIN)/dsdt

demo: setup
	DISDAT_HOME=$(DEMO)/store DISDAT_CONFIG=$(DEMO)/disdat.cfg PATH=$(CURDIR)/$(BIN):$$PATH \
		bash pipes/demo.sh

test: setup
	$(MAKE) --no-print-directory unit-coverage
	bash tests/infra/stack.sh up
	$(BIN)/python -m pytest tests

# run/ and dockerize/ are tested without Docker, AWS or a registry: tests/unit alone covers them
# (the engine's address points nowhere, so a unit test that reaches for Docker fails on every machine)
unit-coverage: setup
	DOCKER_HOST=unix:///nonexistent/docker.sock AWS_ENDPOINT_URL=http://127.0.0.1:9 $(BIN)/python -m pytest -q -p no:cacheprovider tests/unit --cov=disdat_luigi/run --cov=disdat_luigi/dockerize \
		--cov-report=term --cov-fail-under=70

reliability: setup
	bash tests/infra/stack.sh up
	DISDAT_RELIABILITY_REPORT=docs/reliability.md $(BIN)/python -m pytest tests/reliability

lint: setup
	$(BIN)/ruff check disdat_luigi tests pipes bench
	$(BIN)/ruff format --check disdat_luigi tests pipes bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
