"""``@flow``: steps composed once; KFP, Airflow, Kubernetes and local runs are all built from it.

    from xpuflow import Compute, flow

    @flow(name="nightly", default_compute=Compute.cpu(cpu="1", memory="2Gi"))
    def nightly(epochs: int = 10):
        data = prepare()
        model = train(data=data.outputs["output"], epochs=epochs).with_compute(Compute.gpu(model="a100-40gb"))
        report(model=model.output)

The function body runs once, when decorated: each step call inside returns a
:class:`Task`; ``task.outputs["name"]`` (or ``task.output`` for a step with one
output) feeds later steps; the function's parameters (scalars with defaults) are
the flow's parameters. A task's Compute is, first to last: ``task.with_compute(...)``,
the step's own ``compute=``, the flow's ``default_compute``.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..compute import Compute
from ..errors import did_you_mean, invalid
from .step import FlowError, Param, Step, _hints, _kind_of, in_bounds

__all__ = ["Flow", "FlowParam", "OutputRef", "Task", "flow", "current_builder"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # DNS-1123 subdomain
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")

_BUILDER: contextvars.ContextVar[_Builder | None] = contextvars.ContextVar("xpuflow_flow_builder", default=None)


def current_builder() -> _Builder | None:
    """The flow being built in this context (steps called now become its tasks), or None."""
    return _BUILDER.get()


@dataclass(frozen=True)
class FlowParam:
    """A flow parameter while the flow is built: pass it to steps; its value comes at run time."""

    name: str
    type: type
    default: Any

    def __bool__(self) -> bool:
        raise FlowError(f"flow parameter {self.name!r} has no value while the flow is built, so it cannot be "
                        "tested. Fix: pass it to a step and branch inside the step.")

    def __str__(self) -> str:
        raise _in_text(f"flow parameter {self.name!r}", f"my_step(option={self.name})")

    def __format__(self, spec: str) -> str:
        return str(self)


def _in_text(what: str, example: str) -> FlowError:
    """An f-string or str() of a value known only when the flow runs would become its Python repr, silently."""
    return FlowError(f"{what} has no value while the flow is built, so it cannot go into text (an f-string, "
                     f"str(), format). Fix: pass it to a step as it is ({example}) and build the text inside the step.")


@dataclass(frozen=True)
class OutputRef:
    """Output ``output`` of task ``task`` (what ``task.outputs[...]`` returns)."""

    task: str
    output: str
    only: bool = True  # the upstream step has this one output: it writes to the task's own directory

    def __str__(self) -> str:
        raise _in_text(f"output {self.output!r} of task {self.task!r}", f"my_step(data=task.outputs[{self.output!r}])")

    def __format__(self, spec: str) -> str:
        return str(self)


@dataclass
class Task:
    """One call of a step inside a flow. ``compute`` is the effective Compute once the flow is built."""

    name: str
    step: Step
    args: dict[str, Any]
    compute: Compute | None = None
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)
    shards: int = 1  # processes (pods, mapped tasks) that run this task, each with --shard I/N
    shards_param: FlowParam | None = None  # the flow parameter giving the count at run time (``shards`` its default)
    _override: Compute | None = None
    _frozen: bool = False

    @property
    def outputs(self) -> dict[str, OutputRef]:
        only = len(self.step.outputs) == 1
        return {name: OutputRef(self.name, name, only) for name in self.step.outputs}

    @property
    def output(self) -> OutputRef:
        """The only output of a one-output step."""
        if len(self.step.outputs) != 1:
            raise FlowError(f"task {self.name!r} has outputs {', '.join(self.step.outputs)}: .output is ambiguous. "
                            f"Fix: use .outputs[{self.step.outputs[0]!r}].")
        return self.outputs[self.step.outputs[0]]

    def with_compute(self, compute: Compute) -> Task:
        """Run this task with ``compute`` instead of the step's (or the flow's default)."""
        self._check_open("with_compute")
        if not isinstance(compute, Compute):
            raise FlowError(invalid("with_compute", compute, "a Compute", where=f"task {self.name!r}"))
        self._override = compute
        return self

    def with_shards(self, count: int | FlowParam) -> Task:
        """Run this task as ``count`` processes (an int, or an int flow parameter), each with ``--shard I/N``:
        an Indexed Job on Kubernetes, ``dsl.ParallelFor`` on KFP, ``.expand()`` on Airflow; the step's output
        is published when all are done (:mod:`xpuflow.steps.shards`)."""
        self._check_open("with_shards")
        from ..steps.shards import MAX_SHARDS

        where = f"task {self.name!r}"
        if not self.step.shardable:
            raise FlowError(f"{where}: step {self.step.name!r} cannot run in shards: it has no `shard: str` "
                            "parameter. Fix: shard embed, batch_infer or a step of yours that takes --shard I/N "
                            "(xpuflow.steps.shards).")
        if "shard" in self.args:
            raise FlowError(f"{where}: with_shards() and shard= both given. Fix: keep one.")
        static = count.default if isinstance(count, FlowParam) and count.type is int else count
        if not isinstance(static, int) or isinstance(static, bool) or not 1 <= static <= MAX_SHARDS:
            raise FlowError(invalid("with_shards", static, f"a whole number from 1 to {MAX_SHARDS} (or an int flow "
                                    "parameter with such a default)", where=where))
        self.shards_param = count if isinstance(count, FlowParam) else None
        self.shards = static
        return self

    def with_secret_env(self, **env: tuple[str, str]) -> Task:
        """Environment variables read from Kubernetes Secrets: ``VAR=(secret name, key)``; values never enter specs."""
        self._check_open("with_secret_env")
        for var, ref in env.items():
            if not (isinstance(ref, tuple) and len(ref) == 2 and all(isinstance(x, str) and x for x in ref)):
                raise FlowError(invalid(f"with_secret_env({var})", ref, "a (secret name, key) pair of strings",
                                        where=f"task {self.name!r}"))
            if not (_ENV_NAME.fullmatch(var) and len(ref[0]) <= 253 and _SECRET_NAME.fullmatch(ref[0])
                    and len(ref[1]) <= 253 and _SECRET_KEY.fullmatch(ref[1])):
                raise FlowError(invalid(f"with_secret_env({var})", ref, "an env variable name (A-Z, 0-9, _) read from "
                                        "a Secret named as Kubernetes names it (lowercase DNS subdomain) and one of its "
                                        "keys (letters, digits, '-', '_', '.')", where=f"task {self.name!r}",
                                        fix="use the names shown by `kubectl get secret NAME -o yaml`"))
        self.secret_env.update(env)
        return self

    def _check_open(self, what: str) -> None:
        if self._frozen:
            raise FlowError(f"task {self.name!r}: {what}() after the flow was built. Fix: call it inside the flow "
                            "function, or use Flow.with_compute(task=...).")

    @property
    def inputs(self) -> dict[str, str]:
        """Input parameter -> upstream task name (for inputs fed by another task)."""
        return {k: v.task for k, v in self.args.items() if isinstance(v, OutputRef)}

    @property
    def params(self) -> dict[str, Any]:
        """Scalar parameter -> constant or :class:`FlowParam`, as the flow passes them."""
        return {k: v for k, v in self.args.items() if k in self.step.params}

    @property
    def minutes(self) -> float:
        return self.step.minutes


class _Builder:
    def __init__(self, flow_name: str) -> None:
        self.flow_name, self.tasks = flow_name, []  # type: ignore[var-annotated]

    def add(self, step: Step, kwargs: Mapping[str, Any]) -> Task:
        names = {t.name for t in self.tasks}
        name, n = step.name, 2
        while name in names:
            name, n = f"{step.name}_{n}", n + 1
        where = f"flow {self.flow_name!r}, task {name!r}"
        for key, value in kwargs.items():
            if key in step.outputs:
                raise FlowError(f"{where}: {key}= is an Output of {step.name}: the flow chooses where it goes. "
                                f"Fix: drop it and read {name}.outputs[{key!r}].")
            if key not in step.inputs and key not in step.params:
                known = [*step.inputs, *step.params]
                raise FlowError(invalid(f"{where}: argument", key, f"one of {', '.join(known)}", choices=known))
            if isinstance(value, OutputRef):
                if key not in step.inputs:
                    raise FlowError(f"{where}: {key}= is a scalar parameter but gets the output {value.output!r} of "
                                    f"task {value.task!r}. Fix: pass outputs to Input parameters "
                                    f"({', '.join(step.inputs) or 'none'}).")
                if value.task not in names:
                    raise FlowError(f"{where}: {key}= reads task {value.task!r}, which is not in this flow.")
            elif key in step.params and not isinstance(value, FlowParam):
                want = step.params[key].type
                if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                    if not (want is float and type(value) is int):
                        raise FlowError(invalid(f"{where}: {key}", value, f"a {want.__name__}"))
                if not in_bounds(value):
                    raise FlowError(invalid(f"{where}: {key}", value, "an int within int64 or a finite float"))
            elif key in step.inputs and not isinstance(value, (str, FlowParam)):
                raise FlowError(invalid(f"{where}: {key}", value, "an upstream output (task.outputs[...]) or a URL"))
        missing = [i for i in step.inputs if i not in kwargs]
        if missing:
            raise FlowError(f"{where}: input(s) {', '.join(missing)} not given. Fix: pass an upstream task's output, "
                            f"e.g. {missing[0]}=upstream.output.")
        task = Task(name, step, dict(kwargs))
        self.tasks.append(task)
        return task


class Flow:
    """A built flow: its parameters and tasks in call order (upstreams first). Build it with :func:`flow`."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None, default_compute: Compute | None,
                 description: str | None = None) -> None:
        self.fn, self.name = fn, name or fn.__name__
        self.ref = f"{fn.__module__}:{fn.__qualname__}"
        where = f"@flow {self.name!r}"
        if default_compute is not None and not isinstance(default_compute, Compute):
            raise FlowError(invalid("default_compute", default_compute, "a Compute or None", where=where))
        self.default_compute = default_compute
        self.description = description or (inspect.getdoc(fn) or self.name).split("\n\n")[0].replace("\n", " ")
        hints = _hints(fn)
        self.params: dict[str, Param] = {}
        for p in inspect.signature(fn).parameters.values():
            default = None if p.default is inspect.Parameter.empty else p.default
            kind = _kind_of(hints.get(p.name, p.annotation), default)
            if kind not in (bool, int, float, str) or p.default is inspect.Parameter.empty:
                raise FlowError(invalid(f"{where}: parameter {p.name}", default, "an int, float, str or bool with a "
                                        "default (a pipeline parameter)", fix=f"e.g. {p.name}: int = 1"))
            if not in_bounds(default):
                raise FlowError(invalid(f"{where}: parameter {p.name}", default, "an int within int64 or a finite "
                                        "float (a pipeline parameter)", fix="give it a default in that range"))
            self.params[p.name] = Param(p.name, kind, default)  # type: ignore[arg-type]
        builder = _Builder(self.name)
        token = _BUILDER.set(builder)
        try:
            fn(**{n: FlowParam(n, p.type, p.default) for n, p in self.params.items()})
        finally:
            _BUILDER.reset(token)
        if not builder.tasks:
            raise FlowError(f"{where}: the function calls no step. Fix: call @step functions in its body.")
        for task in builder.tasks:
            task.compute = task._override or task.step.compute or default_compute
            if task.compute is None:
                raise FlowError(f"{where}: task {task.name!r} has no compute: step {task.step.ref} declares none and "
                                "the flow has no default. Fix: @step(compute=...), "
                                "@flow(default_compute=...) or task.with_compute(...).")
            task._frozen = True
        self.tasks: tuple[Task, ...] = tuple(builder.tasks)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        names = [t.name for t in self.tasks]
        raise FlowError(f"flow {self.name!r}: no task {name!r}; tasks: {', '.join(names)}.{did_you_mean(name, names)}")

    def computes(self) -> dict[str, Compute]:
        return {t.name: t.compute for t in self.tasks}  # type: ignore[misc]

    def with_compute(self, **overrides: Compute) -> Flow:
        """A copy of the flow with some tasks' Compute replaced (per-task overrides)."""
        for name, compute in overrides.items():
            if not isinstance(compute, Compute):
                raise FlowError(invalid(f"flow {self.name!r}: with_compute({name})", compute, "a Compute"))
        tasks = tuple(copy.copy(t) for t in self.tasks)
        for t in tasks:
            if t.name in overrides:
                t.compute = overrides[t.name]
        for name in overrides:
            self.task(name)
        out = copy.copy(self)
        out.tasks = tasks
        return out

    def with_shards(self, **counts: int) -> Flow:
        """A copy of the flow with some tasks run in that many shards (``with_shards(embed=4)``), fixed: what
        Kubernetes manifests fan out to (they fix the count when rendered; KFP, Airflow and local runs also read
        a count given as a flow parameter when they run)."""
        tasks = tuple(copy.copy(t) for t in self.tasks)
        for t in tasks:
            if t.name in counts:
                t._frozen = False
                t.shards_param = None
                t.with_shards(counts[t.name])
                t._frozen = True
        for name in counts:
            self.task(name)
        out = copy.copy(self)
        out.tasks = tasks
        return out

    def run(self, root: str, **params: Any) -> dict[str, dict[str, str]]:
        """Run every task in this process, outputs under ``root/<task>``; returns each task's output dirs."""
        from .local import run_flow

        return run_flow(self, root, params)

    def __repr__(self) -> str:
        return f"<flow {self.name!r}: {' -> '.join(t.name for t in self.tasks)}>"


def flow(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         default_compute: Compute | None = None) -> Any:
    """Declare a flow (see the module docstring). ``name``: the pipeline / DAG name (default: the function's)."""

    def wrap(f: Callable[..., Any]) -> Flow:
        return Flow(f, name=name, default_compute=default_compute)

    return wrap(fn) if fn is not None else wrap
