"""docs/kueue-dra.md stays true: its Python runs, and every object it shows is part of what xpuflow renders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from xpuflow import Cluster
from xpuflow.render import kueue

DOC = (Path(__file__).resolve().parent.parent / "docs" / "kueue-dra.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def _within(shown: Any, rendered: Any) -> bool:
    """``shown`` (abridged in the doc) is part of ``rendered``: keys kept, list items found in the rendered list."""
    if isinstance(shown, dict):
        return isinstance(rendered, dict) and all(k in rendered and _within(v, rendered[k]) for k, v in shown.items())
    if isinstance(shown, list):
        return isinstance(rendered, list) and all(any(_within(s, r) for r in rendered) for s in shown)
    return shown == rendered


def test_the_python_examples_run_and_what_they_render_is_what_the_doc_shows():
    scope: dict[str, Any] = {}
    for block in _blocks("python"):
        exec(compile(block, "docs/kueue-dra.md", "exec"), scope)  # noqa: S102 - our own documentation
    rendered = [scope["manifest"], *scope["templates"], scope["job"], *kueue.setup(Cluster.load("gke"))]
    shown = [d for block in _blocks("yaml") for d in yaml.safe_load_all(block) if d and "kind" in d]
    assert {d["kind"] for d in shown} >= {"JobSet", "ResourceFlavor", "ClusterQueue", "LocalQueue",
                                          "ResourceClaimTemplate", "Job"}
    for doc in shown:
        same = [r for r in rendered if (r["kind"], r["metadata"]["name"]) == (doc["kind"], doc["metadata"]["name"])]
        assert same and _within(doc, same[0]), doc["kind"] + " " + doc["metadata"]["name"]


def test_the_profile_sections_shown_are_the_shipped_ones():
    for name, block in (("gke", _blocks("yaml")[0]), ("generic", _blocks("yaml")[3])):
        shipped = yaml.safe_load(Path(Cluster.load(name).source).read_text())
        key = next(iter(yaml.safe_load(block)))
        assert _within(yaml.safe_load(block)[key], shipped[key]), name
