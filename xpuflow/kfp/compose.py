"""A ``@flow`` as a KFP pipeline: one component per step, each task placed with its Compute."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ..cluster import Cluster
from ..render import kfp as render_kfp
from . import component

if TYPE_CHECKING:
    from ..compute import Compute
    from ..dsl.flow import Flow

__all__ = ["build_pipeline", "pipeline_name"]


def pipeline_name(flow: Flow) -> str:
    return flow.name.replace("_", "-")


def build_pipeline(flow: Flow | str, cluster: Cluster | str, *, compute: dict[str, Compute] | None = None) -> Any:
    from kfp import dsl

    from ..dsl.flow import FlowParam, OutputRef
    from ..dsl.load import load_flow

    fl = load_flow(flow)
    if compute:
        fl = fl.with_compute(**compute)
    cl = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)
    placements = {t.name: cl.place(t.compute) for t in fl.tasks}  # every task placed before any is built
    names = list(fl.params)

    def body(*channels: Any) -> None:
        values = dict(zip(names, channels))
        made: dict[str, Any] = {}
        for t in fl.tasks:
            args: dict[str, Any] = {}
            for key, value in t.args.items():
                if isinstance(value, OutputRef):
                    args[key] = made[value.task].outputs[value.output]
                    continue
                given = values[value.name] if isinstance(value, FlowParam) else value
                # an input given a URL (or a parameter holding one) reads it as an imported artifact
                args[key] = dsl.importer(artifact_uri=given, artifact_class=dsl.Artifact).output \
                    if key in t.step.inputs else given
            make = component(t.step, image=t.step.image_ref(t.compute))
            if t.shards > 1 or t.shards_param is not None:
                made[t.name] = _sharded(t, make, args, placements[t.name], cl,
                                        values[t.shards_param.name] if t.shards_param is not None else t.shards)
                continue
            task = make(**args)
            render_kfp.apply(task, placements[t.name], step=t.name)
            _secrets(task, t)
            made[t.name] = task

    body.__name__ = fl.name
    body.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default, annotation=p.type)
        for n, p in fl.params.items()])
    return dsl.pipeline(name=pipeline_name(fl), description=fl.description)(body)


def _secrets(task: Any, t: Any) -> None:
    if t.secret_env:
        from kfp import kubernetes

        for var, (secret, key) in t.secret_env.items():
            kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={key: var})


def _sharded(t: Any, make: Any, args: dict[str, Any], placement: Any, cl: Cluster, count: Any) -> Any:
    """A sharded task: ``dsl.ParallelFor`` over its ``--shard`` values (from ``count``, a number or a pipeline
    parameter), each iteration placed like the task (KFP retries a failed one alone), then a small CPU task that
    publishes the iterations' parts as the task's one output."""
    from kfp import dsl

    from ..compute import Compute
    from .components import shard_components

    (output,) = t.step.outputs
    shard_list, join = shard_components(output, t.step.image_ref(Compute.cpu()))
    small = cl.place(Compute.cpu(cpu="500m", memory="1Gi"))
    items = shard_list(count=count)
    render_kfp.apply(items, small, step=f"{t.name}-shards")
    with dsl.ParallelFor(items.output) as shard:
        task = make(**args, shard=shard)
        render_kfp.apply(task, placement, step=t.name)
        _secrets(task, t)
    joined = join(parts=dsl.Collected(task.outputs[output]))
    render_kfp.apply(joined, small, step=f"{t.name}-join")
    return joined
