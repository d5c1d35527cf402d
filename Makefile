# xpuflow - make demo | make test
#
# Each target builds what it needs when missing: the pinned venvs are built once
# by .ci/venv (cached outside the clone, keyed by .ci/constraints/*.txt).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
AIRFLOW_PY := .venv-airflow/bin/python
PYTEST_ARGS ?=

.PHONY: help venv venv-airflow demo test test-main test-airflow bench lock clean

help:
	@echo "make demo   run the main job (placement plan of the example steps on every shipped cluster)"
	@echo "make test   run the whole test suite (builds the venvs on first use)"
	@echo "make bench  run the benchmarks in bench/"

venv:
	@.ci/venv main >/dev/null

venv-airflow:
	@.ci/venv airflow >/dev/null

demo: venv
	$(PY) -m xpuflow plan --cluster gke
	$(PY) -m xpuflow plan --cluster eks
	$(PY) -m xpuflow plan --cluster aks

# Two environments, two pytest runs: kfp 2.17 and the newest cncf-kubernetes
# provider cannot share one venv (see docs/development.md).
test: venv venv-airflow
	$(PY) -m pytest tests --ignore=tests/airflow $(PYTEST_ARGS)
	$(AIRFLOW_PY) -m pytest tests/airflow -p no:cacheprovider $(PYTEST_ARGS)

test-main: venv
	$(PY) -m pytest tests --ignore=tests/airflow $(PYTEST_ARGS)

test-airflow: venv-airflow
	$(AIRFLOW_PY) -m pytest tests/airflow $(PYTEST_ARGS)

bench: venv
	$(PY) bench/import_time.py

clean:
	rm -rf .venv .venv-airflow .pytest_cache build *.egg-info
