"""Validate custom resources against the upstream CRD schemas in ../shared/schemas/crds/.

The CRDs' openAPIV3Schema leaves unknown fields open (the API server prunes or,
with strict field validation, refuses them); ``strict_validator`` closes every
object that lists its properties, as strict field validation does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CRDS = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "crds"


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
    """The openAPIV3Schema of ``api_version`` (group/version) in the CRD file; fails the test if missing."""
    path = CRDS / filename
    if not path.exists():
        pytest.fail(f"{path} is missing: the upstream CRD schema is needed to validate rendered manifests")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == api_version.split("/")[1]]
    return version["schema"]["openAPIV3Schema"]


def strict_validator(filename: str, api_version: str) -> jsonschema.Validator:
    schema = closed(crd_schema(filename, api_version))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)
