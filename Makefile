# Two commands from a fresh clone: `make demo` (the main job) and `make test`.
# Both install what they need: a venv with the pip packages, and Debian's mosquitto + socat + openssl.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench setup clean

$(STAMP): pyproject.toml
	@command -v mosquitto >/dev/null 2>&1 || ( command -v apt-get >/dev/null && ( (apt-get install -y -q mosquitto socat || (apt-get update -q && apt-get install -y -q mosquitto socat)) >/dev/null 2>&1 || sudo -n apt-get install -y -q mosquitto socat >/dev/null 2>&1 ) ) || echo "note: mosquitto could not be installed; the demo falls back to its embedded broker"
	@command -v socat >/dev/null 2>&1 || true
	@command -v openssl >/dev/null 2>&1 || ( command -v apt-get >/dev/null && ( (apt-get install -y -q openssl || (apt-get update -q && apt-get install -y -q openssl)) >/dev/null 2>&1 || sudo -n apt-get install -y -q openssl >/dev/null 2>&1 ) ) || echo "note: openssl could not be installed; deploy/make-certs.sh and tests/test_security.py need it"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || apt-get install -y -q postgresql >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q postgresql) >/dev/null 2>&1 || sudo -n apt-get install -y -q postgresql >/dev/null 2>&1 || (echo 'error: PostgreSQL (Debian package postgresql) could not be installed; the consumer tests need it' >&2; exit 1)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/pip install -q --target $(VENV)/stubs/esp32 micropython-esp32-stubs
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/paydbox demo

test: $(STAMP)
	$(VENV)/bin/pytest -q -n 2 tests

bench: $(STAMP)
	$(VENV)/bin/paydbox bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
