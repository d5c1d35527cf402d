"""Compile a KFP pipeline holding one task per placement and read back the IR YAML."""


from pathlib import Path
from typing import Any  # no `from __future__ import annotations`: KFP reads real annotations

import yaml
from kfp import compiler, dsl

from xpuflow.render import kfp as render_kfp


@dsl.component(base_image="python:3.11-slim")
def noop_step(message: str) -> str:
    return message


def compile_tasks(placements: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """``placements``: display name -> Placement. Returns the compiled YAML documents."""

    @dsl.pipeline(name="xpuflow-parity")
    def pipeline():
        for name, placement in placements.items():
            task = noop_step(message=name).set_display_name(name)
            render_kfp.apply(task, placement)

    compiler.Compiler().compile(pipeline, str(path))
    return list(yaml.safe_load_all(path.read_text()))
