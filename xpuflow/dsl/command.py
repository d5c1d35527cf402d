"""The one builder of a step's command line (``xpuflow step ...``), for every backend that runs a pod.

Kubernetes Jobs and Airflow's KubernetesPodOperator both run
``xpuflow step <name or package.module:function> --option value ...``; the URLs
they pass follow one layout under an artifact root:

- a task with one output writes to ``<root>/<task>``, one with several to ``<root>/<task>/<output>``;
- a checkpointed step keeps its checkpoints at ``<root>/_checkpoints/<task>``, so a retried pod
  (spot preemption) of the same run resumes instead of starting over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import invalid
from .flow import FlowParam, OutputRef, Task
from .step import FlowError, Step

__all__ = ["command", "arguments", "output_url", "checkpoint_url", "flag", "text", "pod_root"]


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def text(value: Any) -> str:
    """A scalar as the step CLI reads it (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pod_root(root: str, where: str) -> str:
    """``root`` (trailing ``/`` dropped) if pods in different places can share it: an object-store URL, or an
    Airflow template resolved at run time. A local path (or ``file://``) lives in one pod's own file system:
    the next pod would never see the output, and a waiting Job would wait for its ``_COMPLETE`` for a day."""
    scheme, sep, _ = root.partition("://")
    if "{{" in root or (sep and scheme and scheme != "file"):
        return root.rstrip("/")
    raise FlowError(invalid("artifact root", root, "an object-store URL (s3://, gs://, az://, any fsspec URL) that "
                            "every pod can reach; a local path is one pod's own disk", where=where,
                            fix="pass e.g. s3://my-bucket/run-1"))


def output_url(root: str, task: str, output: str, only: bool) -> str:
    return f"{root}/{task}" if only else f"{root}/{task}/{output}"


def checkpoint_url(root: str, task: str) -> str:
    return f"{root}/_checkpoints/{task}"


def command(step: Step) -> list[str]:
    """``xpuflow step NAME`` for a built-in step, ``xpuflow step package.module:function`` for any other."""
    from ..steps import builtin_name

    return ["xpuflow", "step", builtin_name(step) or step.pod_ref()]


def arguments(task: Task, root: str, param: Callable[[FlowParam], str] = lambda p: text(p.default),
              shard: str = "") -> list[str]:
    """The options of ``task``: its arguments (flow parameters through ``param``), upstream outputs, its
    own outputs under ``root``, a checkpoint URL for a checkpointed step that was given none, and ``--shard``
    for one process of a sharded task (:meth:`Task.with_shards`)."""
    args: list[str] = []
    for key, value in task.args.items():
        if isinstance(value, OutputRef):
            shown = output_url(root, value.task, value.output, value.only)
        elif isinstance(value, FlowParam):
            shown = param(value)
        else:
            shown = text(value)
        args += [flag(key), shown]
    if shard:  # a sharded task: "N" (an Indexed Job's pod reads its index) or "I/N"
        args += [flag("shard"), shard]
    if task.step.checkpointed and "checkpoint_dir" not in task.args:
        args += [flag("checkpoint_dir"), checkpoint_url(root, task.name)]
    only = len(task.step.outputs) == 1
    for out in task.step.outputs:
        args += [flag(out), output_url(root, task.name, out, only)]
    return args
