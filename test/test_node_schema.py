"""The generated parameter schema and docs/parameters.md table are current, and the schema means
what PARAM_SPECS means (checked with a small independent validator, no jsonschema)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from xmodelkd_ros.node import schema as node_schema
from xmodelkd_ros.node.params import PARAM_SPECS, ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_schema_and_parameter_doc_are_current():
    """Fails when PARAM_SPECS changed without `python -m xmodelkd_ros.node.schema --write`."""
    assert node_schema.stale() == []
    assert node_schema.main(["--check"]) == 0


def test_check_reports_stale_files(tmp_path):
    schema, readme = tmp_path / "s.json", tmp_path / "README.md"
    schema.write_text("{}\n")
    readme.write_text(f"intro\n{node_schema.BEGIN}\nold table\n{node_schema.END}\nrest\n")
    assert node_schema.stale(schema, readme) == [str(schema), str(readme)]
    schema.write_text(node_schema.schema_text())
    readme.write_text(node_schema.render_doc(readme.read_text()))
    assert node_schema.stale(schema, readme) == []
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("rest\n")
    with pytest.raises(ValueError, match="markers"):
        node_schema.render_doc("no markers here")


def test_doc_table_has_every_parameter_once():
    table = node_schema.doc_table()
    names = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
    assert names[: len(PARAM_SPECS)] == [s.name for s in PARAM_SPECS]
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------- validator

_TYPES = {"boolean": (bool,), "integer": (int,), "number": (int, float), "string": (str,),
          "array": (list,), "object": (dict,)}  # fmt: skip


def _errors(doc: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "") -> list[str]:
    """The subset of draft-07 the schema uses: $ref, type, enum, minimum, maximum, items,
    properties, patternProperties, additionalProperties, required."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    out: list[str] = []
    t = schema.get("type")
    if t and (not isinstance(doc, _TYPES[t]) or (t in ("integer", "number")
                                                  and isinstance(doc, bool))):  # fmt: skip
        return [f"{path}: not {t}"]
    if "enum" in schema and doc not in schema["enum"]:
        out.append(f"{path}: {doc!r} not in enum")
    if "minimum" in schema and doc < schema["minimum"]:
        out.append(f"{path}: below minimum")
    if "maximum" in schema and doc > schema["maximum"]:
        out.append(f"{path}: above maximum")
    if t == "array":
        for i, x in enumerate(doc):
            out += _errors(x, schema["items"], root, f"{path}[{i}]")
    if t == "object":
        props, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
        out += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in doc]
        for k, v in doc.items():
            subs = ([props[k]] if k in props else []) + [
                s for p, s in patterns.items() if re.search(p, k)]  # fmt: skip
            if not subs and schema.get("additionalProperties") is False:
                out.append(f"{path}.{k}: not allowed")
            for sub in subs:
                out += _errors(v, sub, root, f"{path}.{k}")
    return out


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / "segment.yaml").read_text())


def _valid(doc: dict[str, Any]) -> list[str]:
    schema = node_schema.json_schema()
    return _errors(doc, schema, schema)


def test_shipped_config_and_cameras_validate(shipped):
    assert _valid(shipped) == []
    doc = copy.deepcopy(shipped)
    doc["/**"]["ros__parameters"]["cameras"].update(
        names=["front"], front={"image_topic": "/f", "compressed": True,
                                "T_cam_lidar": [1.0] * 16})  # fmt: skip
    assert _valid(doc) == []


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda p: p.update(bakend="torch"), "bakend: not allowed"),
        (lambda p: p["input"].update(intensity_policy="clip"), "not in enum"),
        (lambda p: p["output"].update(overlay_alpha=1.5), "above maximum"),
        (lambda p: p["queue"].update(depth=0), "below minimum"),
        (lambda p: p["qos"].update(depth=2.5), "not integer"),
        (lambda p: p["cameras"].update(front={"image_topc": "/f"}), "image_topc: not allowed"),
        (lambda p: p["cameras"].update(names="front"), "not array"),
    ],
)
def test_schema_rejects_what_parse_config_rejects(shipped, edit, problem):
    doc = copy.deepcopy(shipped)
    edit(doc["/**"]["ros__parameters"])
    assert any(problem in e for e in _valid(doc)), _valid(doc)


def test_schema_bounds_match_validation():
    """Every minimum/maximum in the schema is what parse_config enforces (and ROS too:
    the node builds its descriptor ranges from the same specs)."""
    for s in PARAM_SPECS:
        for bound, step in ((s.minimum, -1), (s.maximum, +1)):
            if bound is None:
                continue
            outside = bound + step * (1 if s.type_name == "int" else 0.5)
            value = int(outside) if s.type_name == "int" else float(outside)
            with pytest.raises(ConfigError, match=re.escape(s.name)):
                parse_config({"model": "/m", s.name: value})
            parse_config({"model": "/m", s.name: int(bound) if s.type_name == "int"
                          else float(bound)} | _partner(s.name, bound))  # fmt: skip


def _partner(name: str, bound: float) -> dict[str, Any]:
    """Values that keep cross-parameter rules satisfied at a bound."""
    if name == "diagnostics.warn_ms":
        return {"diagnostics.error_ms": max(200.0, float(bound))}
    if name == "diagnostics.error_ms":
        return {"diagnostics.warn_ms": float(bound)}
    return {}
