"""Validate custom resources against the upstream CRD schemas kept in tests/schemas/.

tests/schemas/ holds structure-only copies of the upstream CRDs (descriptions
stripped; made by tests/schemas/make_schemas.py, sources in tests/schemas/README.md),
so the suite runs on a fresh clone with nothing beside it.

The CRDs' openAPIV3Schema leaves unknown fields open (the API server prunes or,
with strict field validation, refuses them); ``strict_validator`` closes every
object that lists its properties, as strict field validation does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever an object lists its properties."""
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: {n: closed(s) for n, s in v.items()} if k == "properties" else closed(v) for k, v in schema.items()}
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def crd_schema(filename: str, api_version: str) -> dict[str, Any]:
    """The openAPIV3Schema of ``api_version`` (group/version) in a CRD; fails the test if missing.

    ``filename`` is the upstream file name (``jobset.x-k8s.io_jobsets.yaml``) or the
    kept copy's (``jobset.x-k8s.io_jobsets.json``); the copy in tests/schemas/ is read.
    """
    path = SCHEMAS / f"{Path(filename).stem}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: add it with tests/schemas/make_schemas.py (see tests/schemas/README.md)")
    crd = json.loads(path.read_text())
    group, version_name = api_version.split("/")
    assert crd["spec"]["group"] == group, f"{path.name} is for {crd['spec']['group']}, not {group}"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == version_name]
    return version["schema"]["openAPIV3Schema"]


def strict_validator(filename: str, api_version: str) -> jsonschema.Validator:
    schema = closed(crd_schema(filename, api_version))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)
