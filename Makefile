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

.PHONY: help venv venv-airflow venv-xla demo components test test-main test-airflow test-xla bench clean

help:
	@echo "make demo   run the main job (train_gpu_export_npu locally, then its plan on GKE)"
	@echo "make test   run the whole test suite (builds the venvs on first use)"
	@echo "make bench  run the benchmarks in bench/ (figures: bench/results/*.json and *.png)"

venv:
	@.ci/venv main >/dev/null

venv-airflow:
	@.ci/venv airflow >/dev/null

venv-xla:
	@.ci/venv xla >/dev/null

# The main job: train_gpu_export_npu on the embedded digits data, run locally with kfp's
# SubprocessRunner (CPU here), then where each step would run on GKE and what a run costs.
demo: venv
	$(PY) -m xpuflow run train_gpu_export_npu --cluster gke --root out/demo
	$(PY) -m xpuflow plan train_gpu_export_npu --cluster gke

components: venv
	$(PY) -m xpuflow.commands.components components/

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

bench: venv venv-airflow venv-xla
	$(PY) bench/import_time.py
	$(PY) bench/preprocess.py
	$(PY) bench/train.py
	$(PY) bench/export.py
	$(PY) bench/embed.py
	$(PY) bench/compile_time.py
	$(AIRFLOW_PY) bench/dag_parse.py
	$(PY) -m xpuflow step preprocess --output out/bench-data
	PJRT_DEVICE=CPU $(XLA_PY) bench/train_tpu.py --data out/bench-data
	@echo "figures: bench/results/<benchmark>.json and <benchmark>.png (bench/figures.py), linked from docs/benchmarks.md"

clean:
	rm -rf .venv .venv-airflow .venv-xla .pytest_cache build *.egg-info out
