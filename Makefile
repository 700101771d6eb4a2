# pc-switcher — the two commands of the README:
#   make demo   set everything up, bring up a sandbox target, run a real sync into it, tear down
#   make test   set everything up and run the whole test suite (lint, types, unit, integration),
#               the 15 slowest of each integration phase listed; a test that cannot run here fails,
#               none skips (it builds the root machines' cached Debian root first when missing: make root-cache)
# and the developer's fast loop (under 2 minutes, no sandbox machine, no root):
#   make check  lint, types, ansible-lint and the unit tests
# and the install (as root, or as a user with sudo: the privileged steps run through sudo):
#   make install     PREFIX/app, PREFIX/venv, PREFIX/install.json, BINDIR/pc-switcher (pcswitcher/install.py)
#   make uninstall   removes them; keeps every user's ~/.config/pc-switcher and ~/.local/state/pc-switcher
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
PREFIX ?= /opt/pc-switcher
BINDIR ?= /usr/local/bin
export PREFIX BINDIR   # to the recipes through the environment: never parsed by their shell
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_PACKAGES := python3 python3-venv openssh-server openssh-client rsync btrfs-progs acl attr procps util-linux iproute2 tmux sudo mmdebstrap debian-archive-keyring dpkg dpkg-dev apt-utils gnupg

.PHONY: install uninstall readme bootstrap system-deps venv demo test check lint unit integration bench bench-folder-sync bench-packages clean-sandboxes root-cache

bootstrap: system-deps venv
	@# .pyc files: an editable install compiles nothing of pcswitcher, pip writes the dependencies'
	@# only at install time, and PYTHONDONTWRITEBYTECODE (set on some machines) stops writing them at
	@# import. Without them every start compiles its imports again, measured on a 2-core machine:
	@# +0.25 s per pc-switcher start, +0.2 s per ansible-playbook start. Checking costs about 1 s.
	@$(BIN)/python -m compileall -q -j0 pcswitcher $(VENV)/lib >/dev/null || echo "note: some .py files did not compile" >&2

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:" $$missing; \
	  if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then echo "error: run as root (no sudo here) to install: $$missing" >&2; exit 2; fi; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

install: system-deps
	@$(SUDO) $(PYTHON) -I pcswitcher/install.py install --source . --prefix "$$PREFIX" --bindir "$$BINDIR" --python "$(PYTHON)"

uninstall:
	@$(SUDO) $(PYTHON) -I pcswitcher/install.py uninstall --prefix "$$PREFIX" --bindir "$$BINDIR"

# README.md's config example from what `pc-switcher init` writes (tests/unit/test_readme.py checks it)
readme: venv
	$(BIN)/python -m tests.readme_config

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check pcswitcher tests bench
	$(BIN)/ruff format --check pcswitcher tests bench
	$(BIN)/mypy
	@# --offline: no look-up of a newer ansible-lint, no install of requirements (the project has none)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint --offline --profile production -q playbooks roles

# the unit tests on every core (pytest-xdist): they share nothing; the integration tests run one at a time
unit: venv
	@# the tests start pc-switcher dozens of times: its .pyc files up to date (see bootstrap) save ~0.15 s each
	@$(BIN)/python -m compileall -q pcswitcher >/dev/null || echo "note: some .py files did not compile" >&2
	$(BIN)/pytest -q -n auto tests/unit

# lint and unit side by side (-j2: the machine's 2 cores), each one's output kept together (-O)
check: venv
	@$(MAKE) --no-print-directory -j2 -O lint unit

# The integration tests two at a time (pytest-xdist; a module's tests stay on one worker, with the
# sandbox machines they share), then those marked `serial` alone: their interrupts must land in a
# window of fixed length, or they compare something of the host before and after (each module says
# which). Both phases run; either failing fails the target.
INTEGRATION_TESTS = $(BIN)/pytest -q -n 2 --dist loadfile -m 'not serial' --durations=15 tests/integration; \
	parallel=$$?; $(BIN)/pytest -q -m serial --durations=15 tests/integration; serial=$$?; \
	test $$parallel = 0 && test $$serial = 0

integration: bootstrap root-cache
	@$(INTEGRATION_TESTS)

# the unit tests on every core as in `make check`, then the integration tests as above
test: bootstrap lint clean-sandboxes root-cache
	$(BIN)/pytest -q -n auto tests/unit
	@$(INTEGRATION_TESTS)

# the Debian root the root machines start from (tests/sandbox/rootfs.py): built once per recipe,
# 30-120 s, in /var/cache/pcswitcher-sandbox/root/ (or $$PCS_SANDBOX_CACHE); a no-op when it exists
root-cache: bootstrap
	$(BIN)/python -m tests.sandbox root-cache

demo: bootstrap
	$(BIN)/python -m tests.sandbox demo

bench: bootstrap
	$(BIN)/python -m bench.abort_latency

bench-folder-sync: bootstrap   # about 1 GB in 20k files and 200k small files: takes several minutes
	$(BIN)/python -m bench.folder_sync

bench-packages: bootstrap   # root machines: 3 rounds of 20 packages, raw apt-get against the job; a few minutes
	$(BIN)/python -m bench.packages

# Orphans only (a sandbox whose owner process died): machines kept up by a person stay up. The pristine
# dry-run and leftovers tests keep their machines outside /var/tmp (they compare /var/tmp before and after).
clean-sandboxes: venv
	$(BIN)/python -m tests.sandbox down --all --orphaned
	for base in /var/lib/pcswitcher-sandbox-pristine /var/lib/pcswitcher-leftovers-sandbox; do \
	  test ! -d $$base || $(BIN)/python -m tests.sandbox --base-dir $$base down --all --orphaned || exit 1; \
	done
