"""Turn upstream CustomResourceDefinitions into the structure-only schemas the tests read.

    python tests/schemas/make_schemas.py path/to/upstream/*.yaml

For each CRD file, writes ``tests/schemas/<file stem>.json``: the CRD's group, names,
scope and, per version, its ``openAPIV3Schema`` with every ``description`` (upstream
prose) and every printer column dropped. Types, formats, enums, required lists, bounds,
patterns and ``x-kubernetes-*`` markers are kept unchanged, so a custom resource
validates against the copy exactly as it does against the upstream schema.

The upstream repository, path, commit and licence of each file are listed in
tests/schemas/README.md; rerun this script on the files of a newer commit to update.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PROSE = ("description",)


def structure(schema: Any) -> Any:
    """``schema`` without prose. A key named ``description`` under ``properties`` is a field, and is kept."""
    if isinstance(schema, list):
        return [structure(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in PROSE:
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: structure(sub) for name, sub in value.items()}
        else:
            out[key] = structure(value)
    return out


def compact(crd: dict[str, Any]) -> dict[str, Any]:
    """The parts of a CRD that validation needs, in the CRD's own shape (``spec.versions[*].schema``)."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise SystemExit(f"not a CustomResourceDefinition: kind {crd.get('kind')!r}")
    spec = crd["spec"]
    return {
        "apiVersion": crd["apiVersion"],
        "kind": crd["kind"],
        "metadata": {"name": crd["metadata"]["name"]},
        "spec": {
            "group": spec["group"],
            "names": {"kind": spec["names"]["kind"], "plural": spec["names"]["plural"]},
            "scope": spec["scope"],
            "versions": [
                {"name": v["name"], "served": v["served"], "storage": v["storage"],
                 "schema": {"openAPIV3Schema": structure(v["schema"]["openAPIV3Schema"])}}
                for v in spec["versions"]
            ],
        },
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    for name in argv:
        source = Path(name)
        out = HERE / f"{source.stem}.json"
        text = json.dumps(compact(yaml.safe_load(source.read_text())), separators=(",", ":"), sort_keys=True) + "\n"
        out.write_text(text)
        print(f"{out.relative_to(HERE.parents[1])}: {len(text)} bytes (from {source.stat().st_size})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
