# Mailhub: `make run` to start everything, `make test` to run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MUTATION_VENV := .venv-mutation
# `make mutation MODULES="tokens search"` picks modules of mutation/modules.toml (default: all of them).
MODULES ?=
# `make test` runs the suite on SQLite, then again on this PostgreSQL (set it empty to skip).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: run test demo bench lint migrate install install-test install-system clean mutation

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

## Start the web app, the Celery worker and beat (SQLite and a filesystem broker unless configured).
run: migrate
	$(PY) -m mailhub.run

## Start the app against the local Google/Microsoft sandbox with demo users.
demo: migrate
	$(PY) manage.py demo

## System packages the tests use (Dovecot for Outlook, Chromium and CJK/emoji fonts for browser tests, Caddy for
## the proxy config); needs root.
install-system:
	@if ! command -v dovecot >/dev/null || ! command -v chromium >/dev/null || ! command -v caddy >/dev/null \
		|| [ ! -d /usr/share/fonts/opentype/noto ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			dovecot-imapd dovecot-submissiond chromium caddy fonts-noto-cjk fonts-noto-color-emoji >/dev/null; \
	fi

test: install
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory install-system; fi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run >/dev/null
	$(VENV)/bin/pytest -n 2
	@if [ -n "$(TEST_DATABASE_URL)" ]; then DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest -n 2 -m "not browser and not faults"; fi

bench: install
	$(PY) -m bench

$(MUTATION_VENV)/.installed: mutation/requirements.txt
	$(PYTHON) -m venv $(MUTATION_VENV)
	$(MUTATION_VENV)/bin/pip install --quiet -r mutation/requirements.txt
	touch $(MUTATION_VENV)/.installed

## Mutation testing per module against its own tests; scores to mutation/results/ (see README).
mutation: install $(MUTATION_VENV)/.installed
	$(MUTATION_VENV)/bin/python -m mutation $(MODULES)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
