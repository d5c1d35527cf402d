"""A user's own project (tests/support/user_project.py, written to tmp_path, outside xpuflow/) through every verb:
its steps run as plain functions and as `xpuflow step package.module:function`; its flow runs in-process and with
kfp.local, and compiles for KFP, Airflow and Kubernetes on two clusters. (Airflow's dag.test() and built pods:
tests/airflow/test_user_project.py; placements compared across backends: tests/test_parity.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import user_project
import yaml

from xpuflow import Compute, FlowError, Input, Output, flow, step
from xpuflow.dsl.load import load_flow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return user_project.make(tmp_path_factory)


xpuflow = user_project.cli


def test_steps_declare_themselves_and_run_as_plain_functions(project, tmp_path):
    from acme_ml.steps import fit, make_data, score, summarise

    assert (make_data.inputs, make_data.outputs, list(make_data.params)) == ((), ("out",), ["rows", "seed"])
    assert (score.inputs, score.outputs) == (("model", "data"), ("report",))
    assert score.params["strict"].type is bool and fit.checkpointed and not make_data.checkpointed
    assert fit.compute == Compute.gpu(count=1, memory="8Gi") and summarise.compute is None
    assert make_data(out=str(tmp_path / "d"), rows=5) == {"rows": 5}  # outside a flow: just the function
    assert len(json.loads((tmp_path / "d" / "data.json").read_text())) == 5


def test_the_flow_is_its_tasks_with_their_compute(project):
    fl = load_flow(str(project / "flows" / "nightly.py"))
    assert fl.name == "acme_nightly" and [t.name for t in fl.tasks] == list(user_project.TASKS)
    computes = fl.computes()
    assert computes["make_data"] == Compute.cpu(cpu="2", memory="2Gi")  # with_compute, per call
    assert computes["fit"].kind == "gpu" and computes["score"].kind == "npu"
    assert computes["summarise"] == Compute.cpu(cpu="500m", memory="512Mi")  # the flow's default_compute
    assert fl.task("score").inputs == {"model": "fit", "data": "make_data"}
    assert {n: p.default for n, p in fl.params.items()} == {"rows": 64, "scale": 2.0, "strict": False}


def test_the_flow_runs_in_process(project, tmp_path):
    fl = load_flow(str(project / "flows" / "nightly.py"))
    outputs = fl.run(str(tmp_path), rows=10)
    assert (tmp_path / "summarise" / "summary.txt").read_text() == "10 of 10 above\n" or \
        (tmp_path / "summarise" / "summary.txt").read_text().endswith("of 10 above\n")
    assert outputs["fit"]["model"] == str(tmp_path / "fit")
    model = json.loads((tmp_path / "fit" / "model.json").read_text())
    assert model["checkpoint_dir"] == str(tmp_path / "_checkpoints" / "fit")


def test_xpuflow_step_runs_a_user_step_by_import_path(project, tmp_path):
    proc = xpuflow(project, "step", "acme_ml.steps:make_data", "--out", str(tmp_path / "d"), "--rows", "7")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "d" / "data.json").read_text())) == 7
    proc = xpuflow(project, "step", "acme_ml.steps:score", "--model", str(tmp_path / "m"), "--data",
                   str(tmp_path / "d"), "--report", str(tmp_path / "r"), "--strict", "maybe")
    assert proc.returncode == 2 and "expected true or false" in proc.stderr
    helped = xpuflow(project, "step", "acme_ml.steps:score", "--help")
    assert helped.returncode == 0 and "--threshold FLOAT" in helped.stdout and "--report DIR" in helped.stdout
    for ref, says in (("acme_ml.steps:nope", "'nope' in acme_ml.steps is not found"),
                      ("acme_ml.steps:json", "is a module, not a @step"),
                      ("acme_missing.steps:fit", "cannot import module 'acme_missing.steps'"),
                      ("trian", "Did you mean 'train'?")):
        bad = xpuflow(project, "step", ref)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_the_flow_runs_locally_with_kfp_local(project, tmp_path):
    proc = xpuflow(project, "run", "flows/nightly.py", "--param", "rows=10", "--param", "strict=true",
                   "--cluster", "eks", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run / "summarise" / "summary" / "summary.txt").read_text().endswith("of 10 above\n")
    assert json.loads((run / "score" / "report" / "report.json").read_text())["strict"] is True
    model = json.loads((run / "fit" / "model" / "model.json").read_text())
    # a durable checkpoint URL under the pipeline root, carrying the run and the task: a retried pod resumes
    assert model["checkpoint_dir"] == str(run / "fit" / "_checkpoints")
    assert (run / "fit" / "_checkpoints" / "step-1.json").is_file()
    assert "score" in proc.stdout and "inferentia2" in proc.stdout and "[4/4]" in proc.stdout
    bad = xpuflow(project, "run", "flows/nightly.py", "--param", "rowz=3", "--root", str(tmp_path))
    assert bad.returncode == 2 and "parameter 'rowz' is not valid" in bad.stderr and "Did you mean 'rows'" in bad.stderr


@pytest.mark.parametrize("cluster", user_project.CLUSTERS)
def test_the_flow_compiles_for_every_backend(project, tmp_path, cluster):
    flow_file = str(project / "flows" / "nightly.py")
    kfp = xpuflow(project, "compile", flow_file, "--backend", "kfp", "--cluster", cluster, "-o", str(tmp_path / "p.yaml"))
    assert kfp.returncode == 0, kfp.stderr
    docs = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert docs[0]["pipelineInfo"]["name"] == "acme-nightly"
    assert set(docs[0]["root"]["inputDefinitions"]["parameters"]) == {"rows", "scale", "strict"}
    assert "run_task('acme_ml.steps:fit', arguments)" in json.dumps(docs[0]["deploymentSpec"]["executors"]["exec-fit"])
    dag = xpuflow(project, "compile", flow_file, "--backend", "airflow", "--cluster", cluster, "-o", str(tmp_path / "d.py"))
    assert dag.returncode == 0, dag.stderr
    assert f"build_dag('{flow_file}:acme_nightly', cluster='{cluster}')" in (tmp_path / "d.py").read_text()
    k8s = xpuflow(project, "compile", flow_file, "--backend", "k8s", "--cluster", cluster, "-o", str(tmp_path / "j.yaml"),
                  "--artifact-root", "s3://acme/run-3")
    assert k8s.returncode == 0, k8s.stderr
    jobs = [d for d in yaml.safe_load_all((tmp_path / "j.yaml").read_text()) if d]
    for job in jobs:
        kubernetes_validate.validate(job, "1.33", strict=True)
    fit = [j for j in jobs if j["metadata"]["name"].endswith("-fit")][0]["spec"]["template"]["spec"]["containers"][-1]
    assert fit["command"] == ["xpuflow", "step", "acme_ml.steps:fit"]
    args = dict(zip(fit["args"][::2], fit["args"][1::2]))
    assert args == {"--data": "s3://acme/run-3/make_data", "--scale": "2.0",
                    "--checkpoint-dir": "s3://acme/run-3/_checkpoints/fit", "--model": "s3://acme/run-3/fit"}


def test_bad_declarations_are_refused_where_they_are_written():
    def declare(**kw):
        return step(compute=Compute.cpu(), **kw)

    with pytest.raises(FlowError, match=r"parameter rows='\(no default\)' is not valid.*rows: int = 1"):
        @declare()
        def no_default(out: Output, rows): ...
    with pytest.raises(FlowError, match=r"no Output parameter"):
        @declare()
        def no_output(data: Input, n: int = 1): ...
    with pytest.raises(FlowError, match=r"compute='gpu' is not valid: a Compute"):
        @step(compute="gpu")
        def bad_compute(out: Output): ...
    with pytest.raises(FlowError, match=r"\*args is not valid in a step"):
        @declare()
        def star(out: Output, *args): ...
    with pytest.raises(FlowError, match=r"inputs/outputs name 'dat'"):
        declare(inputs=("dat",))(lambda data, out: None)  # noqa: ARG005

    @declare()
    def produce(out: Output, n: int = 1): ...

    @declare()
    def consume(data: Input, out: Output, n: int = 1): ...

    cases = [
        (lambda: consume(), r"input\(s\) data not given"),
        (lambda: consume(data=produce().output, out="x"), r"out= is an Output of consume"),
        (lambda: consume(data=produce().output, n=produce().output), r"n= is a scalar parameter but gets the output"),
        (lambda: consume(data=produce().output, n="3"), r"n='3' is not valid: a int"),
        (lambda: consume(data=produce().output, m=1), r"argument='m' is not valid: one of data, n"),
    ]
    for body, message in cases:
        with pytest.raises(FlowError, match=message):
            flow(name="bad")(lambda: body())

    with pytest.raises(FlowError, match=r"flow parameter 'n' has no value while the flow is built"):
        @flow
        def branching(n: int = 1):
            if n:
                produce()
    with pytest.raises(FlowError, match=r"calls no step"):
        flow(lambda: None)
    @step
    def uncomputed(out: Output): ...

    with pytest.raises(FlowError, match=r"has no compute: step .* declares none and the flow has no default"):
        @flow
        def bare():
            uncomputed()


def test_a_step_defined_in_a_script_is_refused_for_pods():
    from xpuflow.dsl.command import command

    @step(compute=Compute.cpu())
    def local_only(out: Output): ...

    with pytest.raises(FlowError, match="a pod cannot import it. Fix: put the step in an importable module"):
        command(local_only)


def test_an_input_may_be_a_url_or_a_parameter_holding_one(project, tmp_path):
    from acme_ml.steps import fit, make_data
    from kfp import compiler

    from xpuflow.dsl.command import arguments
    from xpuflow.kfp import pipeline

    @flow(name="from_url")
    def from_url(data_url: str = "s3://acme/data"):
        fit(data=data_url)
        fit(data="gs://acme/fixed")
        make_data()

    compiler.Compiler().compile(pipeline(from_url, "eks"), str(tmp_path / "p.yaml"))
    docs = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    importers = [t for t in docs[0]["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"].startswith("importer")]
    assert len(importers) == 2  # KFP reads each URL as an imported artifact
    assert [t.name for t in from_url.tasks] == ["fit", "fit_2", "make_data"]
    args = arguments(from_url.task("fit"), "s3://root", lambda p: "{{ params['%s'] }}" % p.name)
    assert args[:2] == ["--data", "{{ params['data_url'] }}"]
    assert arguments(from_url.task("fit_2"), "s3://root")[:2] == ["--data", "gs://acme/fixed"]


def test_one_user_step_as_a_kubernetes_job(project):
    from acme_ml.steps import fit

    from xpuflow import Cluster
    from xpuflow.jobs import job

    a100 = Compute.gpu(count=1, model="a100-40gb", memory="32Gi")
    (manifest,) = job(fit, "eks", artifact_root="s3://acme/r1/", name="fit_big", compute=a100, data="s3://acme/r1/data")
    kubernetes_validate.validate(manifest, "1.33", strict=True)
    spec = manifest["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == Cluster.load("eks").place(a100).node_selector
    assert spec["containers"][0]["command"] == ["xpuflow", "step", "acme_ml.steps:fit"]
    assert spec["containers"][0]["args"] == ["--data", "s3://acme/r1/data", "--checkpoint-dir", "s3://acme/r1/_checkpoints/fit_big",
                                             "--model", "s3://acme/r1/fit_big"]
    (default,) = job(fit, "generic", artifact_root="s3://acme/r1", data="s3://acme/r1/data")  # the step's own Compute
    assert default["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
