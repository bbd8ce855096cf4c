# Two commands from a fresh clone: `make demo` (the main job) and `make test` (lint, then the tests).
# Both install what they need: Debian's packages for the tools below (each one that is missing), then a
# venv with the pip packages (pyproject.toml, dev extras included) and the MicroPython ESP32 stubs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# command:Debian package. mosquitto (broker tests, demo), socat (virtual-box REPL pty: flash tests),
# nats-server (an MQTT 3.1.1-only broker: the agent's fallback test), systemd-analyze (the unit check),
# openssl (deploy/make-certs.sh, the security tests), postgresql (the consumer on PostgreSQL: its tests
# start a server with the package's initdb; pg_ctlcluster comes with it).
SYSTEM_TOOLS := mosquitto:mosquitto socat:socat nats-server:nats-server systemd-analyze:systemd openssl:openssl \
	pg_ctlcluster:postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: demo test lint bench setup system-tools clean

# Checked on every run (a `command -v` each), so a tool added here reaches existing checkouts too.
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    { $(SUDO) apt-get update -q >/dev/null 2>&1; $(SUDO) apt-get install -y -q $$missing; } || true; \
	fi; \
	still=""; for pair in $(SYSTEM_TOOLS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || still="$$still $$pkg"; done; \
	if [ -n "$$still" ]; then \
	  echo "error: could not install the Debian packages:$$still (needs apt-get as root or passwordless sudo);"; \
	  echo "       install them by hand, then run make again"; exit 1; fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/pip install -q --target $(VENV)/stubs/esp32 micropython-esp32-stubs
	@touch $(STAMP)

setup: system-tools $(STAMP)

demo: setup
	$(VENV)/bin/paydbox demo

# lint first (seconds): pyflakes, import order, syntax, line length (pyproject.toml [tool.ruff]);
# `ruff check --fix .` sorts imports
test: setup lint
	$(VENV)/bin/pytest -q -n 2 tests

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/paydbox bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
