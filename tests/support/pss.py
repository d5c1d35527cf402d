"""Pod Security Standards "restricted", mirrored rule by rule for exact checks.

Source: kubernetes/pod-security-admission policy/check_*.go (the upstream
rules, https://kubernetes.io/docs/concepts/security/pod-security-standards/). checkov has no exact PSS check and no
volume allow-list, so the suite asserts these rules itself as well.
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUME_TYPES = {
    "configMap", "downwardAPI", "emptyDir", "projected", "secret", "csi",
    "persistentVolumeClaim", "ephemeral", "image",
}


def pod_spec_of(manifest: dict[str, Any]) -> dict[str, Any]:
    kind = manifest["kind"]
    if kind == "Pod":
        return manifest["spec"]
    if kind == "Job":
        return manifest["spec"]["template"]["spec"]
    raise ValueError(f"no pod spec in a {kind}")


def violations(spec: dict[str, Any]) -> list[str]:
    """Every restricted-profile rule the pod spec breaks (empty list: compliant)."""
    out: list[str] = []
    pod_ctx = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"{flag} must not be true")
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            out.append(f"volume {vol['name']} uses {sorted(kinds - ALLOWED_VOLUME_TYPES)}")
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    for c in containers:
        ctx = c.get("securityContext") or {}
        name = c.get("name")
        if ctx.get("privileged"):
            out.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false explicitly")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop must include ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add beyond NET_BIND_SERVICE")
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser must not be 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort")
    return out
