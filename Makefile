# xpuflow - make demo | make test
#
# Each target builds what it needs when missing: the pinned venvs are built once
# by .ci/venv (cached outside the clone, keyed by .ci/constraints/*.txt).

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
AIRFLOW_PY := .venv-airflow/bin/python
XLA_PY := .venv-xla/bin/python
PYTEST_ARGS ?=

.PHONY: help venv venv-airflow venv-xla demo test test-main test-airflow test-xla bench clean

help:
	@echo "make demo   run the main job (placement plan of the example steps on every shipped cluster)"
	@echo "make test   run the whole test suite (builds the venvs on first use)"
	@echo "make bench  run the benchmarks in bench/"

venv:
	@.ci/venv main >/dev/null

venv-airflow:
	@.ci/venv airflow >/dev/null

venv-xla:
	@.ci/venv xla >/dev/null

demo: venv
	$(PY) -m xpuflow plan --cluster gke
	$(PY) -m xpuflow plan --cluster eks
	$(PY) -m xpuflow plan --cluster aks

# Three environments, three pytest runs: kfp 2.17 and the newest cncf-kubernetes
# provider cannot share one venv, and torch_xla 2.9 needs torch 2.9 (docs/development.md).
test: venv venv-airflow venv-xla
	$(PY) -m pytest tests --ignore=tests/airflow --ignore=tests/xla $(PYTEST_ARGS)
	$(AIRFLOW_PY) -m pytest tests/airflow -p no:cacheprovider $(PYTEST_ARGS)
	PJRT_DEVICE=CPU $(XLA_PY) -m pytest tests/xla -p no:cacheprovider $(PYTEST_ARGS)

test-main: venv venv-airflow venv-xla
	$(PY) -m pytest tests --ignore=tests/airflow --ignore=tests/xla $(PYTEST_ARGS)

test-airflow: venv-airflow
	$(AIRFLOW_PY) -m pytest tests/airflow -p no:cacheprovider $(PYTEST_ARGS)

test-xla: venv venv-xla
	PJRT_DEVICE=CPU $(XLA_PY) -m pytest tests/xla -p no:cacheprovider $(PYTEST_ARGS)

bench: venv
	$(PY) bench/import_time.py

clean:
	rm -rf .venv .venv-airflow .venv-xla .pytest_cache build *.egg-info
