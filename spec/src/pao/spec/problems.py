"""A problem found in a catalog file: which rule, where (JSON pointer and line), and what."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a catalog file."""

    rule: str
    message: str
    pointer: str = ""
    file: str | None = None
    line: int | None = None
    column: int | None = None
    #: for template problems: the position within the template itself
    template_line: int | None = None
    template_column: int | None = None

    def at(
        self, *, file: str | None = None, line: int | None = None, column: int | None = None
    ) -> Problem:
        """The same problem, located."""
        return replace(
            self, file=file or self.file, line=line or self.line, column=column or self.column
        )

    def format(self) -> str:
        """`file:line: message [rule at pointer]`, the form editors and CI logs understand."""
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        pointer = f" at {self.pointer}" if self.pointer else ""
        return f"{where}: {self.message} [{self.rule}{pointer}]"

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "message": self.message,
            "pointer": self.pointer,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "template_line": self.template_line,
            "template_column": self.template_column,
        }


def pointer(*parts: object) -> str:
    """A JSON pointer from path parts, escaping ~ and /."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def pointer_tokens(json_pointer: str) -> list[str]:
    """The reference tokens of a JSON pointer, unescaped."""
    if not json_pointer:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in json_pointer.lstrip("/").split("/")]


def walk(data: Any, tokens: Iterable[str]) -> tuple[bool, Any]:
    """Follow keys and list indexes into JSON-like data: (found, value)."""
    for token in tokens:
        if isinstance(data, Mapping) and token in data:
            data = data[token]
        elif isinstance(data, list) and token.isdigit() and int(token) < len(data):
            data = data[int(token)]
        else:
            return False, None
    return True, data


def value_at(data: Any, json_pointer: str) -> Any:
    """The value a JSON pointer names in JSON-like data, or None."""
    return walk(data, pointer_tokens(json_pointer))[1]
