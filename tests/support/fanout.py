"""Read a compiled KFP pipeline's fan-out of a sharded task: shard-list -> ParallelFor of the step -> join-shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def parallel_for(path: Path, step: str) -> tuple[str, dict[str, Any]]:
    """The ParallelFor task's name and the root DAG's tasks; asserts the loop runs ``step`` alone, given its shard,
    over the shard list, and that join-shards takes the loop's parts."""
    spec = next(yaml.safe_load_all(path.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    name, loop = next((n, t) for n, t in tasks.items() if "parameterIterator" in t)
    assert loop["parameterIterator"]["items"]["inputParameter"].startswith("pipelinechannel--shard-list")
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == [step] and "shard" in inner[step]["inputs"]["parameters"]
    assert tasks["join-shards"]["inputs"]["artifacts"]["parts"]["taskOutputArtifact"]["producerTask"] == name
    return name, tasks
