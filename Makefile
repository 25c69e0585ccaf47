# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The lock pins every package; torch is pinned there too, so nothing pulls a CUDA build.
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -c constraints.txt

export PATH := $(CURDIR)/$(BIN):$(PATH)
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: run test system-packages install install-all dvc-repro mlflow-ui redis clean services services-down services-status deploy backup restore

run: $(VENV)/.installed
	$(BIN)/pynomaly run --config configs/demo.yaml

test: $(VENV)/.installed-all system-packages
	$(BIN)/python -m pytest

# Debian packages the tests drive: chromium (the workbench's browser test; Playwright cannot
# download browsers here) and Java 17 (Spark). Installed only when missing.
system-packages:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@command -v java >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless; }

install: $(VENV)/.installed
install-all: $(VENV)/.installed-all

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-all: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[all]'
	touch $@ $(VENV)/.installed

dvc-repro: $(VENV)/.installed
	$(BIN)/dvc repro

mlflow-ui: $(VENV)/.installed
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db

# Redis for `pynomaly stream` (127.0.0.1:6379); no-op when it already answers.
redis:
	redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ""

# The production path on this machine: PostgreSQL-backed MLflow and Prefect servers and a
# process worker (infra/local/services.sh); `source .services/env` points commands at them.
services: $(VENV)/.installed-all
	infra/local/services.sh up

services-down:
	infra/local/services.sh down

services-status:
	infra/local/services.sh status

# The registry and workbench databases and the artifact root: `make backup [BACKUP=DIR]`, `make restore BACKUP=DIR`.
backup:
	infra/local/services.sh backup $(BACKUP)

restore:
	infra/local/services.sh restore $(BACKUP)

deploy: $(VENV)/.installed-all
	. .services/env && $(BIN)/python -m flows.deploy --config configs/demo.yaml

clean:
	rm -rf data/validated data/processed data/quarantine data/scored models reports .prefect mlflow/*.db mlflow/artifacts
