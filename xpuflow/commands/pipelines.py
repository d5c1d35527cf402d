"""Find what a CLI verb works on: a ``@flow`` (any file, or an example's name), or for ``compile --backend kfp``
also a native KFP pipeline file (``build(cluster)`` or a module-level ``pipeline``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ..cluster import Cluster
from ..dsl.flow import Flow
from ..dsl.load import _split, example_path, flows_in, load_file, load_flow, pick
from ..dsl.step import FlowError

__all__ = ["resolve_flow", "kfp_pipeline", "env_set"]


def resolve_flow(ref: str) -> Flow:
    """``path/to/file.py[:name]`` or an example's name -> its Flow (refused in one line otherwise)."""
    return load_flow(ref)


@contextlib.contextmanager
def env_set(name: str, value: str) -> Iterator[None]:
    """The environment variable ``name`` set to ``value`` inside, restored after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def kfp_pipeline(ref: str, cluster: str) -> Any:
    """The KFP pipeline of ``ref`` placed on ``cluster``: a flow's, else a native file's ``build(cluster)``, else
    its module-level ``pipeline`` when every task it placed is on ``cluster`` (refused otherwise)."""
    from ..kfp import pipeline as flow_pipeline
    from ..kfp import recording

    path, name = _split(ref)
    if not path.endswith(".py"):
        found = example_path(path)
        path = str(found) if found else path
    if not path.endswith(".py"):
        return flow_pipeline(load_flow(ref), cluster)
    want = Cluster.load(cluster)
    # files that read XPUFLOW_CLUSTER place their module-level pipeline on the cluster asked for
    with env_set("XPUFLOW_CLUSTER", cluster), recording() as placed_on:
        module = load_file(path)
    flows = flows_in(module)
    if flows or name:
        return flow_pipeline(pick(flows, path, name), want)
    if hasattr(module, "build"):
        return module.build(cluster)
    if hasattr(module, "pipeline"):
        other = sorted({c for c in placed_on if c != want.name})
        if other:
            raise FlowError(f"{path}: its module-level pipeline places tasks on cluster {other[0]!r}, not "
                            f"{want.name!r} (--cluster). Fix: define build(cluster) in the file, or place with "
                            "placed(task, os.environ['XPUFLOW_CLUSTER']).")
        return module.pipeline
    raise FlowError(f"{path} defines no @flow, no build(cluster) and no module-level pipeline. Fix: decorate a "
                    "function with @xpuflow.flow.")
