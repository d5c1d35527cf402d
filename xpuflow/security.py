"""``Security``: the pod's and its containers' security settings, Pod Security "restricted" by default.

Every renderer (Kubernetes, KFP, Airflow) takes the contexts from here, sidecars and init containers too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ComputeError, invalid, whole_number
from .podspec import ContainerSecurityContext, PodSecurityContext
from .quantity import MAX_INT32

__all__ = ["Security"]


@dataclass(frozen=True, kw_only=True)
class Security:
    """Pod and container security settings; the default meets Pod Security "restricted".

    Override explicitly, e.g. ``Security(read_only_root_filesystem=True)`` or
    ``Security(run_as_user=1000, run_as_group=1000)``.
    """

    run_as_user: int = 10001
    run_as_group: int = 10001
    run_as_non_root: bool = True
    allow_privilege_escalation: bool = False
    drop_capabilities: tuple[str, ...] = ("ALL",)
    seccomp_profile: Literal["RuntimeDefault", "Localhost", "Unconfined"] = "RuntimeDefault"
    read_only_root_filesystem: bool = False

    def __post_init__(self) -> None:
        where = "Security"
        for name, what in (("run_as_user", "UID"), ("run_as_group", "GID")):  # a numpy integer is kept as an int
            object.__setattr__(self, name, whole_number(where, name, getattr(self, name), low=0, high=MAX_INT32,
                                                        allowed=f"a {what} >= 0 and <= {MAX_INT32}"))
        for name in ("run_as_non_root", "allow_privilege_escalation", "read_only_root_filesystem"):
            if not isinstance(getattr(self, name), bool):
                raise ComputeError(invalid(name, getattr(self, name), "True or False", where=where))
        if self.run_as_non_root and self.run_as_user == 0:
            raise ComputeError(
                invalid(
                    "run_as_user", 0, "a non-zero UID while run_as_non_root=True", where=where,
                    fix="pick a UID such as 10001, or set run_as_non_root=False explicitly",
                )
            )
        if self.seccomp_profile not in ("RuntimeDefault", "Localhost", "Unconfined"):
            raise ComputeError(
                invalid("seccomp_profile", self.seccomp_profile, "one of RuntimeDefault, Localhost, Unconfined",
                        where=where, choices=("RuntimeDefault", "Localhost", "Unconfined"))
            )
        object.__setattr__(self, "drop_capabilities", tuple(self.drop_capabilities))

    @property
    def restricted(self) -> bool:
        """Whether these settings meet Pod Security Standards "restricted"."""
        return (
            self.run_as_non_root
            and self.run_as_user != 0
            and not self.allow_privilege_escalation
            and "ALL" in self.drop_capabilities
            and self.seccomp_profile in ("RuntimeDefault", "Localhost")
        )

    def pod_context(self) -> PodSecurityContext:
        return PodSecurityContext(run_as_non_root=self.run_as_non_root, run_as_user=self.run_as_user,
                                  run_as_group=self.run_as_group, seccomp_profile=self.seccomp_profile)

    def container_context(self) -> ContainerSecurityContext:
        return ContainerSecurityContext(
            allow_privilege_escalation=self.allow_privilege_escalation, drop_capabilities=self.drop_capabilities,
            read_only_root_filesystem=self.read_only_root_filesystem, run_as_non_root=self.run_as_non_root,
            seccomp_profile=self.seccomp_profile)
