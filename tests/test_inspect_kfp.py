"""`xpuflow lint | plan pipeline.yaml`: compiled KFP pipelines written WITHOUT xpuflow (plain kfp +
kfp-kubernetes), compiled with the real compiler, read back and held against the cluster profiles."""

# no `from __future__ import annotations`: KFP reads real annotations

import os
import subprocess
import sys
from pathlib import Path

import matrix
import pytest
from kfp import compiler, dsl, kubernetes
from kfp_compile import compile_tasks

from xpuflow import Cluster
from xpuflow.cli import main
from xpuflow.errors import PipelineFileError
from xpuflow.inspect import lint_pods, plan_pods, read

ROOT = Path(__file__).resolve().parent.parent


@dsl.component(base_image="python:3.11-slim")
def work(x: int) -> int:
    return x


def gpu_l4_spot(task, toleration=True):
    task.set_cpu_request("4").set_memory_request("16Gi").set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    kubernetes.add_node_selector(task, label_key="cloud.google.com/gke-nodepool", label_value="gpu-l4-training")
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Equal", value="present", effect="NoSchedule")
    if toleration:
        kubernetes.add_toleration(task, key="cloud.google.com/gke-spot", operator="Equal", value="true",
                                  effect="NoSchedule")
    return task


@dsl.pipeline(name="good")
def good(epochs: int = 3):
    prep = work(x=epochs).set_display_name("prep").set_cpu_request("2").set_memory_request("4Gi")
    kubernetes.add_node_selector(prep, label_key="cloud.google.com/gke-nodepool", label_value="cpu-general")
    gpu_l4_spot(work(x=prep.output).set_display_name("train"))
    tpu = work(x=1).set_display_name("tpu").set_cpu_request("8").set_memory_request("32Gi")
    tpu.set_accelerator_type("google.com/tpu").set_accelerator_limit(8)
    kubernetes.add_node_selector(tpu, label_key="cloud.google.com/gke-tpu-accelerator", label_value="tpu-v5-lite-podslice")
    kubernetes.add_node_selector(tpu, label_key="cloud.google.com/gke-tpu-topology", label_value="2x4")
    kubernetes.add_toleration(tpu, key="google.com/tpu", operator="Exists", effect="NoSchedule")


@dsl.pipeline(name="wrong")
def wrong():
    gpu_l4_spot(work(x=1).set_display_name("spot-without-toleration"), toleration=False)
    v100 = work(x=1).set_display_name("gpu-model-no-pool-has").set_accelerator_type("nvidia.com/gpu")
    kubernetes.add_node_selector(v100, label_key="cloud.google.com/gke-accelerator", label_value="nvidia-tesla-v100")
    kubernetes.add_toleration(v100, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    tpu = work(x=1).set_display_name("tpu-chips-mismatch").set_accelerator_type("google.com/tpu").set_accelerator_limit(4)
    kubernetes.add_node_selector(tpu, label_key="cloud.google.com/gke-tpu-accelerator", label_value="tpu-v5-lite-podslice")
    kubernetes.add_node_selector(tpu, label_key="cloud.google.com/gke-tpu-topology", label_value="2x4")
    kubernetes.add_toleration(tpu, key="google.com/tpu", operator="Exists", effect="NoSchedule")
    big = work(x=1).set_display_name("fits-no-node").set_cpu_request("64").set_memory_request("8Gi")
    kubernetes.add_node_selector(big, label_key="cloud.google.com/gke-nodepool", label_value="cpu-general")


@dsl.pipeline(name="cpu-free")
def cpu_free():
    work(x=1).set_display_name("cpu-anywhere").set_cpu_request("1").set_memory_request("2Gi")


def compiled(tmp_path: Path, pipeline) -> Path:
    path = tmp_path / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return path


def errors_by_task(path: Path, cluster: str) -> dict[str, list[str]]:
    _, pods = read(path)
    out: dict[str, list[str]] = {p.task: [] for p in pods}
    for f in lint_pods(pods, Cluster.load(cluster)):
        if f.level == "error":
            out[f.step].append(f.message)
    return out


def test_a_correct_plain_kfp_pipeline_lints_clean_and_plans(tmp_path):
    path = compiled(tmp_path, good)
    assert errors_by_task(path, "gke") == {"prep": [], "train": [], "tpu": []}
    rows = {r.step: r for r in plan_pods(read(path)[1], Cluster.load("gke"))}
    assert {k: r.placement.pool for k, r in rows.items()} == {"prep": "cpu-general", "train": "gpu-l4-training",
                                                               "tpu": "tpu-v5e"}
    assert rows["train"].placement.spot and rows["train"].placement.price_per_hour == 0.27
    assert rows["tpu"].placement.price_per_hour == 9.6  # 8 chips x 1.20 on-demand (no spot selector)


def test_each_mistake_of_a_wrong_pipeline_is_one_error(tmp_path):
    errors = errors_by_task(compiled(tmp_path, wrong), "gke")
    assert {task: len(found) for task, found in errors.items()} == {
        "spot-without-toleration": 1, "gpu-model-no-pool-has": 1, "tpu-chips-mismatch": 1, "fits-no-node": 1}
    assert "tainted cloud.google.com/gke-spot=true:NoSchedule" in errors["spot-without-toleration"][0]
    assert "add_toleration(task, key='cloud.google.com/gke-spot'" in errors["spot-without-toleration"][0]
    assert "nvidia-tesla-v100" in errors["gpu-model-no-pool-has"][0]
    assert "Did you mean 'nvidia-tesla-a100'" in errors["gpu-model-no-pool-has"][0]
    assert "4 TPU chips per pod" in errors["tpu-chips-mismatch"][0] and "v5e 2x4: 8" in errors["tpu-chips-mismatch"][0]
    assert "cpu=64" in errors["fits-no-node"][0] and "cpu-general: 7610m cpu" in errors["fits-no-node"][0]


def test_cpu_work_free_to_land_on_untainted_gpu_nodes_is_reported(tmp_path):
    path = compiled(tmp_path, cpu_free)
    findings = lint_pods(read(path)[1], Cluster.load("aks"))  # AKS does not taint GPU pools
    assert [f.level for f in findings] == ["warning"]
    assert "may land on accelerator pool(s) gput4, gput4train, gpua10, gpua100" in findings[0].message
    assert lint_pods(read(path)[1], Cluster.load("gke")) == []  # GKE taints them


def test_pipeline_parameters_are_checked_with_their_defaults(tmp_path):
    @dsl.pipeline(name="params")
    def params(gpus: int = 2, memory: str = "16Gi"):
        t = work(x=1).set_display_name("t").set_memory_request(memory).set_accelerator_type("nvidia.com/gpu")
        t.set_accelerator_limit(gpus)
        kubernetes.add_node_selector(t, label_key="cloud.google.com/gke-nodepool", label_value="gpu-l4-inference")
        kubernetes.add_toleration(t, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")

    findings = lint_pods(read(compiled(tmp_path, params))[1], Cluster.load("gke"))
    messages = [f"{f.level}: {f.message}" for f in findings]
    assert "warning: accelerator count comes from pipeline parameter 'gpus': checked with its default '2'" in messages
    assert any(m.startswith("error: asks for 2 nvidia.com/gpu, but the node pools it selects") for m in messages)


def test_xpuflow_placements_compiled_to_ir_lint_clean_and_plan_to_the_same_pool(tmp_path):
    for cluster_name in matrix.CLUSTERS:
        cases = {k: p for c, k, p in matrix.renderable() if c == cluster_name}
        path = tmp_path / f"{cluster_name}.yaml"
        compile_tasks(cases, path)
        _, pods = read(path)
        cluster = Cluster.load(cluster_name)
        assert [str(f) for f in lint_pods(pods, cluster)] == [], cluster_name
        for row in plan_pods(pods, cluster):
            placement = cases[row.step]
            assert (row.placement.pool, row.placement.spot) == (placement.pool, placement.spot), (cluster_name, row.step)
            assert row.placement.price_per_hour == placement.price_per_hour, (cluster_name, row.step)


def test_cli_lint_and_plan_on_a_compiled_pipeline(tmp_path, capsys):
    path = compiled(tmp_path, wrong)
    assert main(["lint", str(path), "--cluster", "gke"]) == 1
    out = capsys.readouterr().out
    assert out.strip().endswith("on gke: 4 error(s), 2 warning(s)")  # 2 tasks without requests
    assert main(["plan", str(compiled(tmp_path, good)), "--cluster", "gke"]) == 0
    table = capsys.readouterr().out
    assert "gpu-l4-training" in table and "tpu-v5e" in table and "approximate $/hour" in table
    assert main(["plan", str(path), "--cluster", "gke", "--strict"]) == 1
    assert "! spot-without-toleration: selects node pool 'gpu-l4-training'" in capsys.readouterr().out


BAD_FILES = [
    ("missing.yaml", None, r"^pipeline file '.*missing\.yaml': cannot read the file: No such file"),
    ("notyaml.yaml", "a: [1,\n", r"not valid YAML/JSON \(line \d\)"),
    ("other.yaml", "apiVersion: v1\nkind: Pod\n", r"not a compiled KFP pipeline \(no root, deploymentSpec, components\)"),
    ("argo.yaml", "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\n", r"an Argo Workflow .* not the compiled pipeline"),
    ("latin1.yaml", b"name: caf\xe9\n", r"is not UTF-8 text \(byte 0xe9 at offset 9\)"),
    ("dir.yaml", "DIR", r"is a directory\. Fix: give the path of a YAML file"),
    ("fifo.yaml", "FIFO", r"is not a regular file \(a device, FIFO or socket\)"),
]


@pytest.mark.parametrize(("name", "text", "pattern"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_file_that_is_not_a_compiled_pipeline_is_refused_in_one_line(tmp_path, capsys, name, text, pattern):
    path = tmp_path / name
    if text == "DIR":
        path.mkdir()
    elif text == "FIFO":  # opened without waiting for a writer, then refused
        os.mkfifo(path)
    elif isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(PipelineFileError, match=pattern):
        read(path)
    assert main(["lint", str(path), "--cluster", "gke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_command_line_reads_a_compiled_pipeline_in_a_fresh_process(tmp_path):
    path = compiled(tmp_path, good)
    proc = subprocess.run([sys.executable, "-m", "xpuflow", "lint", str(path), "--cluster", "gke"],
                          capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "good (" in proc.stdout and "0 error(s), 0 warning(s)" in proc.stdout


SAMPLES = ROOT / "tests" / "data" / "kfp_samples"


def test_real_world_sample_with_a_gpu_model_no_pool_has():
    name, pods = read(SAMPLES / "node_selector.yaml")
    findings = lint_pods(pods, Cluster.load("gke"))
    assert name == "my-pipeline" and [f.level for f in findings] == ["warning", "error"]  # no requests; no such GPU
    assert "cloud.google.com/gke-accelerator=nvidia-tesla-p4: no node pool of cluster 'gke' has that value" in findings[1].message


def test_real_world_sample_with_every_machine_field_from_a_parameter():
    _, pods = read(SAMPLES / "pipeline_with_string_machine_fields_pipeline_input.yaml")
    (pod,) = pods
    assert pod.limits == {"cpu": "4000m", "memory": "15G", "NVIDIA_TESLA_P4": "1"}  # the parameters' defaults
    messages = [f.message for f in lint_pods(pods, Cluster.load("gke"))]
    assert len([m for m in messages if "comes from pipeline parameter" in m]) == 4
    assert "asks for 1 NVIDIA_TESLA_P4 but no node pool of cluster 'gke' offers 'NVIDIA_TESLA_P4'" in messages[-1]


def test_two_mistakes_in_one_task_are_two_errors(tmp_path):
    @dsl.pipeline(name="both")
    def both():
        t = work(x=1).set_display_name("t").set_cpu_request("4").set_memory_request("16Gi")
        t.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        kubernetes.add_node_selector(t, label_key="cloud.google.com/gke-nodepool", label_value="gpu-l4-training")
        kubernetes.add_node_selector(t, label_key="cloud.google.com/gke-accelerator", label_value="nvidia-tesla-v100")
        kubernetes.add_toleration(t, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")

    (found,) = errors_by_task(compiled(tmp_path, both), "gke").values()
    assert len(found) == 2
    assert "nvidia-tesla-v100" in found[0] and "tainted cloud.google.com/gke-spot=true:NoSchedule" in found[1]


def test_component_yaml_loaded_with_plain_kfp_has_no_compute_until_placed(tmp_path):
    """What components/README.md says: KFP's loader gives a task with no resources, selector or toleration."""
    from kfp import components

    from xpuflow import Compute
    from xpuflow.kfp import placed

    train = components.load_component_from_file(str(ROOT / "components" / "train" / "component.yaml"))

    def pipeline_with(place):
        @dsl.pipeline(name="loaded")
        def loaded():
            data = dsl.importer(artifact_uri="gs://bucket/data", artifact_class=dsl.Dataset)
            task = train(data=data.output).set_display_name("train")
            if place:
                placed(task, "gke", compute=Compute.gpu(model="l4", spot=True))
        return compiled(tmp_path / ("placed" if place else "plain"), loaded)

    (tmp_path / "plain").mkdir(), (tmp_path / "placed").mkdir()
    (pod,) = read(pipeline_with(place=False))[1]
    assert (pod.requests, pod.limits, pod.node_selector, pod.tolerations) == ({}, {}, {}, ())
    assert [f.message.split(":")[0] for f in lint_pods([pod], Cluster.load("gke"))] == ["no cpu or memory request"]
    (pod,) = read(pipeline_with(place=True))[1]
    assert pod.limits["nvidia.com/gpu"] == "1" and lint_pods([pod], Cluster.load("gke")) == []
    # and the READMEs say so (each component's README is generated: tests/test_pipelines.py keeps it in sync)
    assert "What plain-kfp loading loses" in (ROOT / "components" / "README.md").read_text()
    assert "KFP's loader keeps no requests" in (ROOT / "components" / "train" / "README.md").read_text()


def test_a_pipeline_compiled_to_json_is_read(tmp_path):
    path = tmp_path / "cpu.json"
    with pytest.warns(DeprecationWarning, match="JSON is deprecated"):
        compiler.Compiler().compile(cpu_free, str(path))  # JSON has no platform spec: resources only
    (pod,) = read(path)[1]
    assert pod.requests == {"cpu": "1", "memory": "2Gi"}


def test_a_dag_file_where_airflow_is_not_installed_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "my_dag.py"
    path.write_text("from airflow.sdk import DAG\n")
    pytest.importorskip("kfp")  # this venv: kfp and no Airflow (they cannot share one)
    assert main(["lint", str(path), "--cluster", "gke"]) == 2
    err = capsys.readouterr().err
    assert "needs Apache Airflow and its cncf-kubernetes provider (cannot import airflow" in err
    assert err.count("\n") == 1


def test_a_pipeline_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:  # sparse: no disk used, and nothing of it is read
        f.truncate((64 << 20) + 1)
    with pytest.raises(PipelineFileError, match=r"huge\.yaml': is larger than 65536 KiB, too large for a pipeline "
                                                r"file\. Fix: pass the compiled pipeline YAML"):
        read(path)


@dsl.pipeline(name="gke-admission")
def gke_admission():
    """A GPU task that selects the L4 inference pool and does not tolerate its nvidia.com/gpu taint itself."""
    infer = work(x=1).set_display_name("infer").set_cpu_request("2").set_memory_request("8Gi")
    infer.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    kubernetes.add_node_selector(infer, label_key="cloud.google.com/gke-nodepool", label_value="gpu-l4-inference")
    cpu = work(x=1).set_display_name("cpu-on-gpu-pool").set_cpu_request("1").set_memory_request("2Gi")
    kubernetes.add_node_selector(cpu, label_key="cloud.google.com/gke-nodepool", label_value="gpu-l4-inference")


def test_gke_adds_the_gpu_toleration_to_pods_that_request_gpus_and_lint_checks_them_as_admitted(tmp_path):
    """GKE's ExtendedResourceToleration admission: a pod asking for nvidia.com/gpu tolerates that taint by the
    time it is scheduled, so a plain-kfp task without the toleration is not an error there. A pod that asks for
    no GPU gets nothing, and a cluster without that admission still needs the toleration written."""
    import yaml

    path = compiled(tmp_path, gke_admission)
    gke = errors_by_task(path, "gke")
    assert gke["infer"] == [] and len(gke["cpu-on-gpu-pool"]) == 1
    assert "tainted nvidia.com/gpu=present:NoSchedule, without a toleration" in gke["cpu-on-gpu-pool"][0]
    data = yaml.safe_load((ROOT / "xpuflow" / "catalog" / "clusters" / "gke.yaml").read_text())
    assert data["extended_resource_toleration"] is True
    without = Cluster.from_dict({**data, "extended_resource_toleration": False}, source="gke-without-admission")
    findings = [f for f in lint_pods(read(path)[1], without) if f.level == "error"]
    assert {f.step for f in findings} == {"infer", "cpu-on-gpu-pool"}
    assert "kubernetes.add_toleration(task, key='nvidia.com/gpu', operator='Equal', value='present'" in \
        next(f.message for f in findings if f.step == "infer")
    with pytest.raises(Exception, match=r"extended_resource_toleration"):
        Cluster.from_dict({**data, "extended_resource_toleration": "yes"}, source="bad")
