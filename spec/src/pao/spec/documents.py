"""YAML documents with the line and column of every value, found only when a problem needs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from pao.spec.problems import Problem, pointer_tokens

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DocumentError(Exception):
    """The text is not a YAML (or JSON) mapping; carries the problem with its position."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.message)


@dataclass
class Document:
    """Parsed data plus lazy positions for JSON pointers."""

    text: str
    data: Any
    file: str | None = None
    _root: yaml.Node | None = field(default=None, repr=False)

    def locate(self, json_pointer: str) -> tuple[int | None, int | None]:
        """1-based line and column of the value at `json_pointer` (or its nearest parent)."""
        if self._root is None:
            try:
                self._root = yaml.compose(self.text, Loader=_Loader)
            except yaml.YAMLError:
                return None, None
        node = self._root
        if node is None:
            return None, None
        for token in pointer_tokens(json_pointer):
            child = _child(node, token)
            if child is None:
                break
            node = child
        return node.start_mark.line + 1, node.start_mark.column + 1

    def value_style(self, json_pointer: str) -> str | None:
        """The YAML scalar style at `json_pointer` ('|', '>', '"', ...), if it is a scalar."""
        self.locate(json_pointer)
        node = self._root
        for token in pointer_tokens(json_pointer):
            node = _child(node, token) if node is not None else None
        return node.style if isinstance(node, yaml.ScalarNode) else None

    def place(self, problem: Problem) -> Problem:
        """The problem with this document's file and the line of its pointer."""
        line, column = self.locate(problem.pointer)
        return problem.at(
            file=self.file, line=problem.line or line, column=problem.column or column
        )


def _child(node: yaml.Node, token: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == token:
                return value
        return None
    if isinstance(node, yaml.SequenceNode) and token.isdigit():
        index = int(token)
        return node.value[index] if index < len(node.value) else None
    return None


def parse(text: str, file: str | None = None) -> Document:
    """Parse YAML (JSON is YAML too); the top level must be a mapping.

    Values stay JSON-compatible: an unquoted date stays the string it was written as.
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = _to_python(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise DocumentError(
            Problem(
                rule="yaml-syntax",
                message=f"not valid YAML: {exc.problem}"
                + (f" ({exc.context})" if exc.context else ""),
                file=file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        ) from exc
    except yaml.YAMLError as exc:
        raise DocumentError(
            Problem(rule="yaml-syntax", message=f"not valid YAML: {exc}", file=file)
        ) from exc
    except RecursionError as exc:
        raise DocumentError(
            Problem(rule="yaml-syntax", message="the document nests too deeply", file=file)
        ) from exc
    except ValueError as exc:  # a scalar no Python type holds, e.g. a 5,000-digit integer
        raise DocumentError(
            Problem(rule="yaml-syntax", message=f"a value cannot be read: {exc}", file=file)
        ) from exc
    if not isinstance(data, dict):
        raise DocumentError(
            Problem(
                rule="yaml-syntax",
                message="the document must be a mapping with apiVersion, kind and metadata",
                file=file,
                line=1,
            )
        )
    # The node tree is not kept: thousands of them slow the garbage collector; `locate` composes
    # again in the rare case a problem needs a line.
    return Document(text=text, data=data, file=file)


_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_scalars = yaml.SafeLoader("")


def _to_python(node: yaml.Node) -> Any:
    """Python values from a composed node tree (faster than PyYAML's constructor)."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag in (_STR, _TIMESTAMP):
            return node.value
        construct = yaml.SafeLoader.yaml_constructors.get(node.tag)
        return construct(_scalars, node) if construct else node.value
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(child) for child in node.value]
    if any(key.tag == _MERGE for key, _ in node.value):
        # Merge keys (<<) are rare in catalogs; PyYAML's constructor knows their rules.
        return yaml.SafeLoader("").construct_document(node)
    return {_to_python(key): _to_python(value) for key, value in node.value}
