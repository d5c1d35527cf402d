"""A Placement keeps its pod-spec pieces typed; renderers write them through one ``to_dict`` per type."""

from __future__ import annotations

import dataclasses

import pytest

from xpuflow import Cluster, Compute
from xpuflow.podspec import (
    ContainerSecurityContext,
    EmptyDirVolume,
    MatchExpression,
    NodeAffinity,
    PodSecurityContext,
    PreferredTerm,
    Toleration,
    VolumeMount,
    dicts,
)
from xpuflow.render import kubernetes


def test_placement_pieces_are_typed():
    p = Cluster.load("gke").place(Compute.gpu(model=["a100-80gb", "h100-80gb"], cpu="8", memory="64Gi", spot="prefer"))
    assert p.tolerations and all(isinstance(t, Toleration) for t in p.tolerations)
    assert isinstance(p.affinity, NodeAffinity)
    assert all(isinstance(e, MatchExpression) for term in p.affinity.required for e in term)
    assert p.affinity.preferred and all(isinstance(t, PreferredTerm) for t in p.affinity.preferred)
    assert [type(v) for v in p.volumes] == [EmptyDirVolume] and [type(m) for m in p.volume_mounts] == [VolumeMount]
    assert isinstance(p.pod_security_context, PodSecurityContext)
    assert isinstance(p.container_security_context, ContainerSecurityContext)
    assert all(isinstance(t, Toleration) for t in Cluster.load("gke").spot_tolerations)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.tolerations[0].key = "x"  # type: ignore[misc]


def test_the_renderer_writes_what_to_dict_gives():
    p = Cluster.load("gke").place(Compute.gpu(model=["a100-80gb", "h100-80gb"], cpu="8", memory="64Gi", spot="prefer"))
    spec = kubernetes.pod_spec(p, image="i", command=["x"])
    assert spec["tolerations"] == dicts(p.tolerations)
    assert spec["affinity"] == p.affinity.to_dict()
    assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    spec["tolerations"][0]["key"] = "changed"  # a rendered dict is the caller's own: the placement is untouched
    assert p.tolerations[0].key != "changed"


@pytest.mark.parametrize("d", [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    {"operator": "Exists"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
])
def test_a_toleration_reads_back_what_it_writes(d):
    assert Toleration.from_dict(d).to_dict() == d


def test_node_affinity_writes_only_the_parts_it_has():
    expr = MatchExpression("pool", "In", ("a", "b"))
    assert NodeAffinity(required=((expr,),)).to_dict() == {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "b"]}]}]}}}
    assert NodeAffinity(preferred=(PreferredTerm(50, (expr,)),)).to_dict() == {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "b"]}]}}]}}
    assert MatchExpression.from_dict({"key": "gpu", "operator": "Exists"}).to_dict() == {"key": "gpu", "operator": "Exists"}
