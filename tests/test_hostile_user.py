"""Regression tests from trying xpuflow as an outsider would (a user's project in tmp_path, outside xpuflow/):
settings a backend would have dropped, or accepted and left broken, without a word."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import user_project

from xpuflow import Cluster, FlowError
from xpuflow.dsl.load import load_flow

xpuflow = user_project.cli


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return user_project.make(tmp_path_factory)


@pytest.mark.parametrize("root", ["/mnt/shared/run-1", "relative/run-1", "file:///mnt/shared/run-1"])
def test_k8s_refuses_an_artifact_root_that_only_one_pod_can_see(project, tmp_path, root):
    # each Job's pod has its own disk: with a local root the next Job never sees the output, and its init
    # container waits a day for a _COMPLETE marker that a local output never gets. Refused, nothing written.
    out = tmp_path / "jobs.yaml"
    run = xpuflow(project, "compile", str(project / "flows" / "nightly.py"), "--backend", "k8s", "--cluster", "eks",
                  "-o", str(out), "--artifact-root", root)
    assert run.returncode == 2 and not out.exists()
    (line,) = run.stderr.strip().splitlines()
    assert f"artifact root={root!r} is not valid: an object-store URL" in line and "Traceback" not in run.stderr
    from xpuflow.jobs import flow_manifests, job

    fl = load_flow(str(project / "flows" / "nightly.py"))
    with pytest.raises(FlowError, match="artifact root"):
        flow_manifests(fl, Cluster.load("eks"), root)
    with pytest.raises(FlowError, match="artifact root"):
        job(fl.task("fit").step, "eks", artifact_root=root, data="s3://acme/r1/data")


@pytest.mark.parametrize("backend", ["kfp", "airflow"])
def test_artifact_root_is_refused_where_the_backend_would_drop_it(project, tmp_path, backend):
    # --artifact-root was silently ignored: the Airflow DAG wrote to the default bucket instead of the user's
    out = tmp_path / ("p.yaml" if backend == "kfp" else "dag.py")
    run = xpuflow(project, "compile", str(project / "flows" / "nightly.py"), "--backend", backend, "--cluster", "eks",
                  "-o", str(out), "--artifact-root", "s3://acme/mine")
    assert run.returncode == 2 and not out.exists()
    (line,) = run.stderr.strip().splitlines()
    assert "--artifact-root='s3://acme/mine' is not valid: only for --backend k8s" in line


@pytest.mark.parametrize("backend", ["kfp", "airflow", "k8s"])
def test_compile_never_writes_over_its_own_inputs(project, tmp_path, backend):
    # `-o flows.py` replaced the user's flow file with the compiled pipeline (exit 0 for kfp and k8s)
    flow_file = project / "flows" / "nightly.py"
    cluster = tmp_path / "team.yaml"
    cluster.write_text((Path(__file__).resolve().parents[1] / "xpuflow/catalog/clusters/eks.yaml").read_text())
    before = flow_file.read_bytes(), cluster.read_bytes()
    for output, given in ((flow_file, f"{flow_file}:acme_nightly"), (cluster, str(flow_file))):
        run = xpuflow(project, "compile", given, "--backend", backend, "--cluster", str(cluster), "-o", str(output))
        assert run.returncode == 2, run.stdout
        (line,) = run.stderr.strip().splitlines()
        assert f"-o {str(output)!r} is the input" in line and "Fix: choose another output path" in line
    kueue = xpuflow(project, "kueue", "--cluster", str(cluster), "-o", str(cluster))
    assert kueue.returncode == 2 and "is the input" in kueue.stderr
    assert (flow_file.read_bytes(), cluster.read_bytes()) == before


FSTRING_FLOW = '''
from xpuflow import Compute, flow
from acme_ml.steps import make_data, fit

@flow(name="fstring", default_compute=Compute.cpu())
def fstring(bucket: str = "s3://acme", rows: int = 8):
    data = make_data(rows=rows)
    fit(data=TEXT)
'''


@pytest.mark.parametrize("text", ['f"{bucket}/raw"', "str(bucket)", '"{}/raw".format(bucket)',
                                  'f"{data.output}/part-0"', "str(data.outputs['out'])"])
def test_a_flow_parameter_or_output_in_text_is_refused(project, tmp_path, text):
    # f"{bucket}/raw" became "FlowParam(name='bucket', ...)/raw": plan, compile and run took it, exit 0
    path = tmp_path / "flows.py"
    path.write_text(FSTRING_FLOW.replace("TEXT", text))
    run = xpuflow(project, "compile", str(path), "--backend", "k8s", "--cluster", "eks", "-o", str(tmp_path / "j.yaml"),
                  "--artifact-root", "s3://acme/r")
    assert run.returncode == 2 and not (tmp_path / "j.yaml").exists()
    (line,) = run.stderr.strip().splitlines()
    assert "has no value while the flow is built, so it cannot go into text" in line, line
    assert "FlowParam(" not in line and "OutputRef(" not in line


LAZY_STEPS = '''
import os
from xpuflow import Compute, Output, step

@step(compute=Compute.cpu())
def report(out: Output, write: bool = True, files: int = 1):
    """Writes `files` files into out, or (write=false, a bug) returns without writing its output at all."""
    if write:
        os.makedirs(out, exist_ok=True)
        for i in range(files):
            open(os.path.join(out, f"{i}.txt"), "w").write("x")
'''


def test_a_user_step_that_writes_no_output_keeps_the_previous_one_on_the_store(tmp_path, monkeypatch):
    # the pointer was switched to a version with no files (the previous output's files removed), then the
    # upload died on a FileNotFoundError: the finished output was replaced by nothing
    import fsspec

    from xpuflow.steps import run
    from xpuflow.steps.io import StepError
    from xpuflow.steps.store import download

    (tmp_path / "lazy_pkg").mkdir()
    (tmp_path / "lazy_pkg" / "__init__.py").write_text(LAZY_STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    fs = fsspec.filesystem("memory")
    url = "memory://hostile/report"
    fs.rm("/hostile", recursive=True) if fs.exists("/hostile") else None
    run("lazy_pkg:report", ["--out", url])
    before = {p: fs.cat_file(p) for p in fs.find("/hostile")}
    with pytest.raises(StepError, match=r"wrote no output directory to upload; the previous output there is kept"):
        run("lazy_pkg:report", ["--out", url, "--write", "false"])
    assert {p: fs.cat_file(p) for p in fs.find("/hostile")} == before
    run("lazy_pkg:report", ["--out", url + "-empty", "--files", "0"])  # an empty output is a finished output
    assert json.loads(fs.cat_file("/hostile/report-empty/_COMPLETE"))["files"] == {}
    assert os.listdir(download(url + "-empty", str(tmp_path / "got"))) == []


def test_step_help_says_required_not_a_python_internal(project):
    run = xpuflow(project, "step", "acme_ml.steps:fit", "--help")
    assert run.returncode == 0 and "inspect._empty" not in run.stdout
    assert "--data DIR" in run.stdout and "(required)" in run.stdout


LAB = """
name: lab
provider: generic
pool_label: lab.example.com/pool
node_pools:
  - {name: cpu, cpu: "32", memory: 128Gi, price: {on_demand: 0.5}, labels: {lab.example.com/pool: cpu}}
  - name: l4
    cpu: "16"
    memory: 64Gi
    price: {on_demand: 0.8}
    gpu: {model: l4, count: 4}
    labels: {lab.example.com/pool: l4}
    taints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]
kueue:
  local_queues: [team-a]
  quotas:
    cpu: {cpu: "4", memory: 8Gi}
    l4: {cpu: "4", memory: 8Gi, accelerators: GPUS}
"""


QUEUED_FLOW = """
from xpuflow import Compute, flow
from acme_ml.steps import make_data

@flow(name="queued", default_compute=Compute.cpu())
def queued():
    make_data().with_compute(Compute.cpu(cpu="8", memory="8Gi", queue="team-a"))
"""


def test_a_queued_step_larger_than_its_pools_quota_is_an_error(project, tmp_path):
    # the ClusterQueue xpuflow renders has no cohort to borrow from: a Workload asking more than the quota is
    # never admitted (pending for ever), while lint said 0 errors
    from xpuflow import Compute, PlacementError

    path = tmp_path / "lab.yaml"
    path.write_text(LAB.replace("GPUS", "1"))
    lab = Cluster.load(str(path))
    with pytest.raises(PlacementError, match=r"queue='team-a': the step asks cpu=8, more than the quota of every "
                                             r"pool it may land on \(kueue.quotas.l4: cpu=4\), so Kueue would never"):
        lab.place(Compute.gpu(model="l4", count=1, cpu="8", memory="8Gi", queue="team-a"))
    with pytest.raises(PlacementError, match=r"the step asks nvidia.com/gpu=2, more than .*l4: nvidia.com/gpu=1\)"):
        lab.place(Compute.gpu(model="l4", count=2, cpu="2", memory="4Gi", queue="team-a"))
    assert lab.place(Compute.gpu(model="l4", count=1, cpu="4", memory="8Gi", queue="team-a")).pool == "l4"
    flow_file = tmp_path / "queued.py"
    flow_file.write_text(QUEUED_FLOW)
    run = xpuflow(project, "lint", str(flow_file), "--cluster", str(path))
    assert run.returncode == 1 and "1 error(s)" in run.stdout
    assert "error: step 'make_data': " in run.stdout and "(kueue.quotas.cpu: cpu=4)" in run.stdout


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"data": "s3://acme/r1/data", "model": "s3://acme/mine"}, r"model= is an Output of fit: it is written under"),
    ({"data": "s3://acme/r1/data", "epochs": 3}, r"argument='epochs' is not valid: one of data, scale"),
    ({"scale": 3.0}, r"input\(s\) data not given"),
])
def test_one_step_as_a_job_refuses_arguments_its_pod_would_drop_or_choke_on(project, kwargs, pattern):
    # an Output given was rendered twice (--model mine --model <root>/fit: the step wrote to the root, silently);
    # an unknown option and a missing input were rendered, and the pod failed on its first argparse line
    from acme_ml.steps import fit

    from xpuflow.jobs import job

    with pytest.raises(FlowError, match=pattern):
        job(fit, "eks", artifact_root="s3://acme/r1", **kwargs)


@pytest.mark.parametrize(("allocatable", "field"), [('{cpu: "16", memory: 6Gi}', "cpu"),
                                                    ('{cpu: "7", memory: 64Gi}', "memory")])
def test_a_measured_allocatable_above_the_nodes_capacity_is_refused(tmp_path, allocatable, field):
    # a typo in allocatable (16 for 6) gave negative reservations: a 12-CPU step was placed on 8-CPU nodes
    # (Pending for ever) and lint agreed
    from xpuflow import ClusterFileError

    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
node_pools:
  - {{name: big, cpu: "8", memory: 8Gi, allocatable: {allocatable}, price: {{on_demand: 0.1}}}}
""")
    with pytest.raises(ClusterFileError, match=rf"tiny.yaml: node_pools\[0\].allocatable.{field}: .* is more than the "
                                               rf"node's {field} \(8(Gi)?\): allocatable is capacity less reservations"):
        Cluster.load(str(path))


LONG_NAME_FLOW = '''
from xpuflow import Compute, flow
from acme_ml.steps import make_data, fit

@flow(name="Quarterly_Business_Review.Training_Flow_For_The_Whole_Team_2026", default_compute=Compute.cpu())
def quarterly(rows: int = 8):
    data = make_data(rows=rows)
    fit(data=data.output)
    fit(data=data.output)
'''


def test_k8s_object_names_are_dns_labels_whatever_the_flow_is_called(project, tmp_path):
    # "Quarterly_Business_Review.Training..." gave Jobs named with capitals, '.' and 80 characters: exit 0,
    # and the API server refused every one of them
    import re

    import yaml

    path = tmp_path / "flows.py"
    path.write_text(LONG_NAME_FLOW)
    out = tmp_path / "jobs.yaml"
    run = xpuflow(project, "compile", str(path), "--backend", "k8s", "--cluster", "eks", "-o", str(out),
                  "--artifact-root", "s3://acme/r")
    assert run.returncode == 0, run.stderr
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    names = [d["metadata"]["name"] for d in docs]
    label = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
    assert all(label.fullmatch(n) for n in names) and len(set(names)) == len(names) == 3, names
    assert all(label.fullmatch(d["metadata"]["labels"]["xpuflow.io/flow"]) for d in docs)
    assert names[0].startswith("quarterly-business-review-training-flow")


@pytest.mark.parametrize(("ref", "pattern"), [
    ("../acme_ml/steps:fit", r"'../acme_ml/steps' is not valid: a module's import path \(package.module\), not a file"),
    ("acme_broken:fit", r"module 'acme_broken' raised ValueError on import: broken at import\. Fix: run `python -c"),
])
def test_xpuflow_step_with_a_bad_module_is_one_line(project, ref, pattern):
    # a file path gave a TypeError traceback (relative import), a module raising on import its traceback
    import re

    (project / "acme_broken.py").write_text('raise ValueError("broken at import")\n')
    run = xpuflow(project, "step", ref, "--help")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert re.search(pattern, line), line


@pytest.mark.parametrize(("url", "expected"), [
    ("memory://AKIAEXAMPLE:hunter2-SECRET@bucket/run-1/prep", "memory://***@bucket/run-1/prep: no _COMPLETE marker"),
    ("nosuchproto://bucket/run-1/prep", "cannot open this URL (Protocol not known: nosuchproto)"),
])
def test_a_url_in_an_error_never_shows_its_credentials_and_is_one_line(project, url, expected):
    # `xpuflow wait` (a Job's init container) printed a URL's password in the pod log, and a scheme fsspec
    # cannot open was a ValueError traceback
    run = xpuflow(project, "wait", url, "--timeout", "0")
    assert run.returncode == 2 and "hunter2-SECRET" not in run.stderr + run.stdout
    (line,) = run.stderr.strip().splitlines()
    assert expected in line, line


def test_redacted_masks_only_a_urls_credentials():
    from xpuflow.errors import redacted, shown

    assert redacted("input='https://u:p4ss@host/x.csv' and postgresql://app:pw@db:5432/rag") == \
        "input='https://***@host/x.csv' and postgresql://***@db:5432/rag"
    assert redacted("s3://bucket/run-1/model (me@example.org)") == "s3://bucket/run-1/model (me@example.org)"
    assert shown("gs://key:secret@bucket/x") == "'gs://***@bucket/x'"


@pytest.mark.parametrize("option", ["--scale=nan", "--scale=inf", "--scale=-Infinity"])
def test_xpuflow_step_reads_scalars_as_run_param_does(project, tmp_path, option):
    # `xpuflow run --param scale=nan` was refused but `xpuflow step ... --scale nan` ran the step with NaN
    run = xpuflow(project, "step", "acme_ml.steps:fit", "--data", str(tmp_path / "d"), "--model", str(tmp_path / "m"),
                  option)
    assert run.returncode == 2 and "expected a finite number" in run.stderr and not (tmp_path / "m").exists()


def test_xpuflow_step_reads_whole_numbers_as_pipeline_parameters(project, tmp_path):
    for rows in ("٣", "1_000", str(2**63)):
        run = xpuflow(project, "step", "acme_ml.steps:make_data", "--out", str(tmp_path / "d"), "--rows", rows)
        assert run.returncode == 2 and "expected a whole number (an int64)" in run.stderr, rows
    ok = xpuflow(project, "step", "acme_ml.steps:make_data", "--out", str(tmp_path / "d"), "--rows", "-0")
    assert ok.returncode == 0, ok.stderr
