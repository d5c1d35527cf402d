"""A clone with nothing beside it can run its own tests: the schemas they need live in tests/schemas/."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import crd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "schemas"
# A path out of the clone to the workspace's reference folder (spelled in two parts so this file does not match).
OUTSIDE = re.compile(r"\.\./" + r"shared\b|" + r"shared/" + r"(schemas|reference)\b")
PROJECT_DIRS = ("xpuflow", "tests", "bench", "dags", "pipelines", "examples", "components", "docs", "images", ".ci")


def _make_schemas():
    spec = importlib.util.spec_from_file_location("make_schemas", SCHEMAS / "make_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project_files():
    for top in PROJECT_DIRS:
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".json", ".parquet", ".pt", ".onnx", ".npz"):
                yield path
    yield from (p for p in ROOT.iterdir() if p.is_file())


def test_nothing_in_the_project_reads_outside_the_clone():
    offenders = [
        f"{p.relative_to(ROOT)}:{n}" for p in _project_files() if p != Path(__file__)
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)
    ]
    assert not offenders, f"files that read outside the clone: {offenders}"


def test_the_crd_helper_reads_the_copies_in_the_project():
    assert crd.SCHEMAS.resolve() == SCHEMAS
    schema = crd.crd_schema("jobset.x-k8s.io_jobsets.yaml", "jobset.x-k8s.io/v1alpha2")
    assert "replicatedJobs" in schema["properties"]["spec"]["properties"]


def test_a_missing_schema_fails_the_test_with_how_to_add_it():
    with pytest.raises(pytest.fail.Exception, match=r"make_schemas\.py"):
        crd.crd_schema("example.com_widgets.yaml", "example.com/v1")


def test_every_kept_schema_is_listed_with_its_source_and_licence():
    readme = (SCHEMAS / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| ") and ".json" in line}
    kept = {p.name for p in SCHEMAS.glob("*.json")}
    assert kept and set(rows) == kept
    for row in rows.values():
        assert re.search(r"\| [0-9a-f]{40} \| Apache-2\.0 \|$", row), row


def _prose(schema, path="$"):
    """Where ``schema`` still carries a ``description`` keyword (a field named description is fine)."""
    if isinstance(schema, list):
        return [hit for i, v in enumerate(schema) for hit in _prose(v, f"{path}[{i}]")]
    if not isinstance(schema, dict):
        return []
    hits = [path] if isinstance(schema.get("description"), str) else []
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            hits += [hit for name, sub in value.items() for hit in _prose(sub, f"{path}.{name}")]
        elif key != "description":
            hits += _prose(value, f"{path}.{key}")
    return hits


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMAS.glob("*.json")))
def test_kept_schemas_are_structure_only(name):
    doc = json.loads((SCHEMAS / name).read_text())
    assert doc["kind"] == "CustomResourceDefinition"
    assert _prose(doc) == []
    for version in doc["spec"]["versions"]:
        assert version["schema"]["openAPIV3Schema"]["type"] == "object"


def test_make_schemas_drops_prose_and_keeps_a_field_named_description():
    upstream = {
        "description": "upstream prose",
        "type": "object",
        "required": ["value"],
        "properties": {
            "description": {"description": "more prose", "type": "string", "maxLength": 2048},
            "value": {"description": "prose", "type": "integer", "format": "int32", "minimum": 0,
                      "x-kubernetes-validations": [{"rule": "self >= 0", "message": "kept"}]},
        },
    }
    assert _make_schemas().structure(upstream) == {
        "type": "object",
        "required": ["value"],
        "properties": {
            "description": {"type": "string", "maxLength": 2048},
            "value": {"type": "integer", "format": "int32", "minimum": 0,
                      "x-kubernetes-validations": [{"rule": "self >= 0", "message": "kept"}]},
        },
    }


def test_make_schemas_writes_a_compact_crd(tmp_path, monkeypatch):
    module = _make_schemas()
    monkeypatch.setattr(module, "HERE", tmp_path)
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "example.com_widgets.yaml"
    source.write_text(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n"
        "spec:\n  group: example.com\n  names: {kind: Widget, plural: widgets, singular: widget}\n  scope: Namespaced\n"
        "  versions:\n  - name: v1\n    served: true\n    storage: true\n"
        "    additionalPrinterColumns: [{name: Age, type: date, jsonPath: .metadata.creationTimestamp, description: age}]\n"
        "    schema:\n      openAPIV3Schema: {type: object, description: a widget, properties: {size: {type: integer}}}\n"
    )
    assert module.main([str(source)]) == 0
    doc = json.loads((tmp_path / "example.com_widgets.json").read_text())
    assert doc["spec"]["versions"] == [{"name": "v1", "served": True, "storage": True, "schema": {
        "openAPIV3Schema": {"type": "object", "properties": {"size": {"type": "integer"}}}}}]
