"""Nested mappings as flat ``{"a.b.c": value}`` dictionaries.

Why its own module: both a ROS params file (the replay reads the node's
``ros__parameters``) and a resolved training recipe (``--resume`` compares one with the run's
``recipe.json``) are addressed by dotted keys, and neither side should import the other.
"""

from __future__ import annotations

from typing import Any


def flatten_dotted(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}``; lists and other values are
    leaves, an empty nested mapping leaves no key."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_dotted(value, f"{name}."))
        else:
            out[name] = value
    return out
