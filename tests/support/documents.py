"""Reading the JSON documents PAO publishes about itself (AsyncAPI, OpenAPI): their local refs."""

from __future__ import annotations

from typing import Any


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """What a local `#/...` JSON pointer ref names in the document (asserts that it resolves)."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), ref
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    """Every `$ref` in the document, in order."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []
