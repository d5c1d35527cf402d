"""Retrieval steps: ``chunk`` (CPU) -> ``embed`` (GPU, inference pool) -> ``index`` (CPU); and
``batch_infer`` (GPU, inference pool), batch scoring with a model from the ``train`` step.

Each step is a plain function over directories, like the other steps (``xpuflow step chunk ...``).
Every output file is written under a temporary name and renamed; each step writes its JSON
summary last and removes it first, so a directory without it is not a finished output.

The shipped corpus (``builtin:docs``) is a few short Markdown documents written for this project
(``corpus/*.md``), about placement, spot preemption, node pools, TPUs, NPU export and retrieval.
The libraries (torch, sentence-transformers, faiss) are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUILTIN_DOCS", "corpus_dir"]

BUILTIN_DOCS = "builtin:docs"


def corpus_dir() -> Path:
    """The shipped corpus directory (package data)."""
    from importlib.resources import files

    return Path(str(files("xpuflow.steps.rag") / "corpus"))
