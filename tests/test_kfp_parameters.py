"""Compute from KFP pipeline parameters: accepted where KFP resolves them at run time (cpu, memory, their
limits, accelerator count), refused in one line where it cannot (anything that decides the node pool) and
on every backend without run-time parameters."""

# no `from __future__ import annotations`: KFP reads real annotations
import pytest
import yaml
from kfp import compiler, dsl
from kfp_compile import noop_step

from xpuflow import Cluster, Compute, ComputeError, RenderError
from xpuflow.inspect import lint_pods, read
from xpuflow.kfp import placed
from xpuflow.render import airflow as render_airflow
from xpuflow.render import kubernetes

GKE = Cluster.load("gke")


def _executor(path, name):
    docs = list(yaml.safe_load_all(path.read_text()))
    for task in docs[0]["root"]["dag"]["tasks"].values():
        if task["taskInfo"]["name"] == name:
            label = docs[0]["components"][task["componentRef"]["name"]]["executorLabel"]
            return docs[0]["deploymentSpec"]["executors"][label]["container"]["resources"]
    raise KeyError(name)


def test_gpu_count_cpu_and_memory_from_pipeline_parameters(tmp_path):
    @dsl.pipeline(name="params")
    def pipeline(gpus: int = 2, cpu: str = "6", memory: str = "24Gi"):
        task = noop_step(message="x").set_display_name("train")
        placed(task, GKE, compute=Compute.gpu(count=gpus, model="l4", spot=True, cpu=cpu, memory=memory,
                                                        shm="4Gi"))

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    res = _executor(path, "train")
    ph = "{{$.inputs.parameters['pipelinechannel--%s']}}"
    assert res["accelerator"]["resourceCount"] == ph % "gpus" and res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == (ph % "cpu", ph % "cpu")
    assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (ph % "memory", ph % "memory")
    # read back by lint: checked with the parameters' defaults
    (pod,) = read(path)[1]
    assert pod.limits == {"cpu": "6", "memory": "24Gi", "nvidia.com/gpu": "2"}
    findings = lint_pods([pod], GKE)
    assert any(f.level == "error" and "asks for 2 nvidia.com/gpu" in f.message for f in findings)  # l4 nodes hold 1


def test_a_literal_limit_with_a_parameter_request(tmp_path):
    seen = []

    @dsl.pipeline(name="limit")
    def pipeline(cpu: str = "2"):
        compute = Compute.cpu(cpu=cpu, cpu_limit="4")
        seen.append(compute)
        placed(noop_step(message="x").set_display_name("t"), GKE, compute=compute)

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    res = _executor(path, "t")
    assert res["resourceCpuRequest"] == "{{$.inputs.parameters['pipelinechannel--cpu']}}"
    assert res["resourceCpuLimit"] == "4"
    (compute,) = seen
    assert compute.hardware.endswith("(cpu=cpu at run time)")
    assert compute.replace(cpu="1").params == ()  # a literal given later wins


REFUSED = [
    ("model", lambda p: Compute.gpu(model=p), r"Compute.gpu: model=\"pipeline parameter 'value'\" is not valid: a "
                                              r"literal value: KFP resolves pipeline parameters only for cpu"),
    ("topology", lambda p: Compute.tpu(version="v5e", topology=p), r"topology=.* a literal value"),
    ("spot", lambda p: Compute.cpu(spot=p), r"spot=.* a literal value"),
    ("device", lambda p: Compute.npu(device=p), r"device=.* a literal value"),
    ("shm", lambda p: Compute.gpu(memory=p), r"shm='\(default\)' is not valid: an explicit size when memory comes "
                                             r"from a pipeline parameter"),
]


@pytest.mark.parametrize(("case", "build", "pattern"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_parameter_where_kfp_cannot_take_one_is_refused(tmp_path, case, build, pattern):
    errors = []

    @dsl.pipeline(name="refused")
    def pipeline(value: str = "x"):
        with pytest.raises(ComputeError, match=pattern) as e:
            build(value)
        errors.append(str(e.value))
        noop_step(message="x")

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    assert len(errors) == 1 and "\n" not in errors[0]


def test_backends_without_run_time_parameters_refuse_them(tmp_path):
    placements = []

    @dsl.pipeline(name="other-backends")
    def pipeline(gpus: int = 1):
        placements.append(GKE.place(Compute.gpu(count=gpus, model="l4", spot=True)))
        noop_step(message="x")

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    (p,) = placements
    for render in (lambda: kubernetes.job(p, name="t", image="i"), lambda: render_airflow.pod_kwargs(p)):
        with pytest.raises(RenderError, match=r"cannot express pipeline_parameters .* pass literal values"):
            render()
