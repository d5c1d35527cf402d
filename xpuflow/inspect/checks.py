"""Hold each ``TaskPod`` against a ``Cluster``: lint findings, and the pool it would land on.

Findings reuse :class:`xpuflow.lint.Finding`; plan rows reuse :class:`xpuflow.plan.PlanRow`
with a ``Placement`` read back from the pod, so ``xpuflow lint | plan`` print pipelines
they did not write exactly as they print xpuflow's own flows.
"""

from __future__ import annotations

from ..choice import share
from ..cluster import Cluster, Taint
from ..errors import did_you_mean
from ..lint import Finding
from ..placement import Placement
from ..plan import PlanRow
from ..podspec import ContainerSecurityContext, MatchExpression, NodeAffinity, PodSecurityContext, PreferredTerm, Toleration
from .nodes import WELL_KNOWN, Node, fits, nodes, offers, quantity, selector_matches, terms_match, untolerated
from .pod import TaskPod

__all__ = ["lint_pods", "plan_pods"]

_ONE_POD = ("kfp", "airflow")  # backends that run one pod per task


def lint_pods(pods: list[TaskPod], cluster: Cluster, backend: str = "kfp") -> list[Finding]:
    return [f for pod in pods for f in _assess(pod, cluster, backend)[0]]


def plan_pods(pods: list[TaskPod], cluster: Cluster) -> list[PlanRow]:
    """One row per task: the cheapest node it can land on, or the first reason it cannot."""
    rows = []
    for pod in pods:
        findings, fitting = _assess(pod, cluster, "k8s")
        if not fitting:
            problem = next((f.message for f in findings if f.level == "error"), "no node pool admits it")
            rows.append(PlanRow(pod.task, None, None, problem, what=_asked(pod), pods=pod.pods, fanout=pod.fanout))
            continue
        # the scheduler's preference first (preferred node affinity), then the price the pod pays
        node = min(fitting, key=lambda n: (-_preferred(pod, n), _price(n, pod) is None, _price(n, pod) or 0.0,
                                           cluster.node_pools.index(n.pool)))
        rows.append(PlanRow(pod.task, None, _placement(pod, node, cluster), what=_asked(pod), pods=pod.pods,
                            fanout=pod.fanout))
    return rows


def _requests(pod: TaskPod) -> dict[str, str]:
    """What the scheduler counts: a request, else the limit (Kubernetes defaults one to the other)."""
    return {k: pod.requests.get(k) or pod.limits[k] for k in ("cpu", "memory") if k in pod.requests or k in pod.limits}


def _assess(pod: TaskPod, cluster: Cluster, backend: str) -> tuple[list[Finding], list[Node]]:
    def error(message: str) -> Finding:
        return Finding("error", pod.task, message)

    out = [Finding("warning", pod.task, note) for note in pod.unknown]
    requests, extended = _requests(pod), pod.extended()
    if not requests:
        out.append(Finding("warning", pod.task, "no cpu or memory request: the pod is BestEffort (evicted first) and "
                           "the autoscaler cannot size a node for it. Fix: set requests (kfp: task.set_cpu_request, "
                           "set_memory_request; or xpuflow.kfp.placed(task, cluster, compute=...))"))
    every = nodes(cluster)
    where = f"cluster {cluster.name!r}"
    selector = dict(pod.node_selector)  # less the keys already reported, so later checks still run
    for key, value in pod.node_selector.items():
        seen = sorted({n.labels[key] for n in every if key in n.labels})
        if key in WELL_KNOWN and not seen:
            continue
        if not seen or value not in seen:
            del selector[key]
        if not seen:
            out.append(error(f"node selector {key}={value}: no node pool of {where} carries the label {key!r}: the "
                             "pod would stay Pending. Fix: select a label the cluster's nodes have, or describe it "
                             "in the cluster file (docs/clusters.md)"))
        elif value not in seen:
            out.append(error(f"node selector {key}={value}: no node pool of {where} has that value; its nodes have "
                             f"{key} in {', '.join(seen)}.{did_you_mean(value, seen)} Fix: use one of those, or add "
                             "such a node pool to the cluster file"))
    offered = sorted({p.accelerator.resource for p in cluster.node_pools if p.accelerator})
    for resource, count in extended.items():
        if resource not in offered:
            out.append(error(f"asks for {count} {resource} but no node pool of {where} offers {resource!r}; "
                             f"its pools offer {', '.join(offered) or 'no accelerators'}. Fix: ask for one of those "
                             "(kfp: set_accelerator_type) and pick the model with a node selector"))
            return out, []
    reported = any(f.level == "error" for f in out)
    selected = [n for n in every if selector_matches(selector, n) and terms_match(pod.required_terms, n)]
    if reported and (not selected or not selector):  # nothing left that says where the task should go
        return out, []
    if not selected:
        out.append(error(f"node selector {pod.node_selector or '{}'} and the required node affinity together "
                         f"match no node pool of {where}: the pod would stay Pending"))
        return out, []
    with_resource = [n for n in selected if offers(extended, n)]
    if not with_resource:
        out += [error(m) for m in _resource_mismatch(pod, extended, selected)]
        return out, []
    tolerations = pod.tolerations + admission_tolerations(extended, cluster)
    admitted = [n for n in with_resource if not untolerated(tolerations, n)]
    if not admitted:
        out.append(error(_untolerated_message(tolerations, with_resource)))
        return out, []
    fitting = [n for n in admitted if fits(requests, n)]
    if not fitting:
        sizes = "; ".join(f"{p.name}: {p.allocatable.text() if p.allocatable else 'size unknown'} allocatable"
                          for p in _unique(n.pool for n in admitted))
        asked = ", ".join(f"{k}={v}" for k, v in requests.items())
        out.append(error(f"requests {asked}, which fits no node it may land on ({sizes}; allocatable: capacity "
                         "less reservations and DaemonSets). Fix: lower the request, "
                         "or select a pool with larger nodes"))
        return out, []
    if not extended:
        idle = [p.name for p in _unique(n.pool for n in fitting) if p.accelerator is not None]
        if idle:
            out.append(Finding("warning", pod.task, f"CPU-only work may land on accelerator pool(s) {', '.join(idle)}"
                               " (untainted, or tolerated): it would hold an accelerator node. Fix: select a CPU "
                               "pool with a node selector, or add a NotIn node affinity on the pool label"))
    multi = sorted({f"{n.pool.name} {n.topology}" for n in fitting if n.hosts > 1})
    if multi and backend in _ONE_POD:
        out.append(error(f"TPU slice(s) {', '.join(multi)} span several hosts: {backend} runs one pod per task. "
                         "Fix: select a single-host topology, or submit the slice as a JobSet"))
    return out, fitting


def _taint_text(taint: Taint) -> str:
    return f"{taint.key}{'=' + taint.value if taint.value is not None else ''}:{taint.effect}"


def admission_tolerations(extended: dict[str, str], cluster: Cluster) -> tuple[dict[str, str], ...]:
    """What the cluster's admission adds to a pod before it is scheduled: with ExtendedResourceToleration (GKE
    enables it), ``key=<resource>, operator=Exists, effect=NoSchedule`` for each extended resource requested."""
    if not cluster.extended_resource_toleration:
        return ()
    return tuple({"key": resource, "operator": "Exists", "effect": "NoSchedule"} for resource in sorted(extended))


def _untolerated_message(tolerations: tuple[dict[str, str], ...], candidates: list[Node]) -> str:
    """One error for a task every candidate node of which has a taint it does not tolerate."""
    missing: dict[str, list[Taint]] = {}
    for n in candidates:
        for taint in untolerated(tolerations, n):
            if taint not in missing.setdefault(n.pool.name, []):
                missing[n.pool.name].append(taint)
    fixes = []
    for taint in dict.fromkeys(t for taints in missing.values() for t in taints):
        how = f"operator='Equal', value={taint.value!r}" if taint.value is not None else "operator='Exists'"
        fixes.append(f"kubernetes.add_toleration(task, key={taint.key!r}, {how}, effect={taint.effect!r})")
    if len(missing) == 1:
        pool, taints = next(iter(missing.items()))
        return (f"selects node pool {pool!r}, tainted {', '.join(_taint_text(t) for t in taints)}, without a "
                f"toleration for it: the pod would stay Pending. Fix: tolerate it (kfp: {'; '.join(fixes)})")
    pools = "; ".join(f"{pool} ({', '.join(_taint_text(t) for t in taints)})" for pool, taints in missing.items())
    return (f"can only land on tainted node pools and tolerates none of their taints: {pools}: the pod would stay "
            "Pending. Fix: select the pool you mean with a node selector and tolerate its taints (kfp: "
            "kubernetes.add_toleration(task, key=..., operator='Equal', value=..., effect='NoSchedule'))")


def _resource_mismatch(pod: TaskPod, extended: dict[str, str], selected: list[Node]) -> list[str]:
    tpus = [n for n in selected if n.pool.accelerator and n.pool.accelerator.kind == "tpu"]
    if tpus:
        count = next(iter(extended.values()), "0")
        shapes = sorted({f"{n.pool.accelerator.name} {n.topology}: {n.chips_per_host}" for n in tpus})  # type: ignore[union-attr]
        return [f"asks for {count} TPU chips per pod, but the TPU slices it selects have other chips per host "
                f"({'; '.join(shapes[:6])}). Fix: set the google.com/tpu count to the chips per host of the "
                "topology, and select the topology (cloud TPU labels) that has it"]
    have = "; ".join(sorted({f"{n.pool.name}: {_node_offer(n)}" for n in selected})[:6])
    asked = ", ".join(f"{c} {r}" for r, c in extended.items())
    return [f"asks for {asked}, but the node pools it selects do not offer that ({have}). Fix: select a pool with "
            "that accelerator, or lower the count"]


def _node_offer(node: Node) -> str:
    acc = node.pool.accelerator
    return "no accelerator" if acc is None else f"{acc.count or node.chips_per_host}x {acc.resource}"


def _unique(pools):  # noqa: ANN001, ANN202 - NodePools in profile order, each once
    seen = []
    for p in pools:
        if all(p is not q for q in seen):
            seen.append(p)
    return seen


def _asked(pod: TaskPod) -> str:
    extended = pod.extended()
    if extended:
        return ", ".join(f"{c}x {r}" for r, c in extended.items())
    req = _requests(pod)
    return f"cpu {req.get('cpu', '-')} / {req.get('memory', '-')}"


def _preferred(pod: TaskPod, node: Node) -> int:
    """The weight the pod's preferred node affinity gives ``node`` (the sum of the terms it matches)."""
    return sum(weight for weight, term in pod.preferred_terms if terms_match((term,), node))


def _price(node: Node, pod: TaskPod) -> float | None:
    """What the pod pays: its share of the node (xpuflow.choice.share), all hosts together."""
    price = node.pool.price(node.spot, node.chips_per_host)
    if price is None:
        return None
    requests = _requests(pod)
    cpu, memory = (quantity(k, requests[k]) if k in requests else None for k in ("cpu", "memory"))
    devices = sum(int(c) for c in pod.extended().values() if c.isdigit())
    part = share(node.pool, cpu_m=int(cpu.value * 1000) if cpu else 0, memory=int(memory.value) if memory else 0,
                 devices=devices)
    return round(price * node.hosts * part, 4)


def _placement(pod: TaskPod, node: Node, cluster: Cluster) -> Placement:
    """The pod as ``xpuflow plan`` prints placements (read back, not rendered: compute is None)."""
    acc = node.pool.accelerator
    extended = pod.extended()
    accelerator = next(((r, int(c)) for r, c in extended.items() if c.isdigit()), None)
    if acc is None:
        hardware = _asked(pod)
    elif acc.kind == "tpu":
        hardware = f"tpu {acc.name} {node.topology}"
    else:
        hardware = f"{accelerator[1] if accelerator else 0}x {acc.name}" + (f" mig {acc.mig}" if acc.mig else "")
    affinity = NodeAffinity(
        tuple(tuple(MatchExpression.from_dict(e) for e in term) for term in pod.required_terms),
        tuple(PreferredTerm(w, tuple(MatchExpression.from_dict(e) for e in term)) for w, term in pod.preferred_terms),
    ) if pod.required_terms or pod.preferred_terms else None
    return Placement(
        cluster=cluster.name, pool=node.pool.name, kind=acc.kind if acc else "cpu", hardware=hardware,
        instance_type=node.machine_type, spot=node.spot, hosts=node.hosts, requests=dict(pod.requests),
        limits=dict(pod.limits), accelerator=accelerator, node_selector=dict(pod.node_selector),
        tolerations=tuple(Toleration.from_dict(t) for t in pod.tolerations), affinity=affinity, env={}, labels={},
        volumes=(), volume_mounts=(), pod_security_context=PodSecurityContext(),
        container_security_context=ContainerSecurityContext(), restricted=False, timeout=None, retries=0,
        priority_class=None, grace_period=None, ephemeral_storage=None, price_per_hour=_price(node, pod),
        compute=None,  # type: ignore[arg-type] - read from a pipeline, not declared
    )
