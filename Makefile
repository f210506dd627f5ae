# The two commands a new user needs: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-deps lint docs clean

$(STAMP): pyproject.toml tests/interop/package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# An independent Riemann client for the interoperability tests, if node is here.
	if command -v npm >/dev/null 2>&1; then npm ci --silent --prefix tests/interop; fi
	touch $@

run: $(STAMP)
	@echo "duct: dashboard at http://127.0.0.1:8901/ (stop with Ctrl-C)"
	$(BIN)/twistd --nodaemon --pidfile= duct --config duct.yml.example

lint: $(STAMP)
	$(BIN)/ruff check duct tests bench twisted
	$(BIN)/mypy

# Debian packages for the real servers the tests start: installed as root,
# otherwise the apt-get line to run is printed and make stops.
test-deps:
	bash scripts/test-deps.sh

test: test-deps lint
	$(BIN)/pytest -q

docs: $(STAMP)
	$(BIN)/python docs/update_reference.py README.md

clean:
	rm -rf $(VENV) *.egg-info
