# The two commands of the README, and helpers. Everything runs from the virtualenv .venv.
PYTHON ?= $(shell command -v /usr/bin/python3.11 || command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: up test lint format schema down status images images-check images-dry-run

$(STAMP): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	touch $(STAMP)

## Command 1: set up and run the whole system (Ctrl-C stops everything).
up: $(STAMP)
	$(VENV)/bin/python -m aios_site.launcher

## Command 2: set up and run the whole test suite.
test: $(STAMP)
	bash scripts/test.sh $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

schema: $(STAMP)
	$(VENV)/bin/python manage.py spectacular --validate --fail-on-warn --file schema.yaml

## Stop embedded PostgreSQL/Redis left running by manage.py commands.
down:
	$(VENV)/bin/python -m aios_site.embedded stop

status:
	$(VENV)/bin/python -m aios_site.embedded status

## Container images (docker, podman or buildah; docs/deploy.md)
images images-check images-dry-run:
	$(MAKE) -f deploy/Makefile.images $@
