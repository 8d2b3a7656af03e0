"""Filters templates may use beyond Jinja2's own (upper, lower, default, replace, trim...)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json as _json
import re
import unicodedata
import xml.sax.saxutils
from typing import Any

import regex
import yaml
from jinja2.exceptions import SecurityError

_MAX_PATTERN = 500
_REGEX_TIMEOUT = 0.05


class TemplateLimitError(SecurityError):
    """A template tried to exceed a limit (size, loop, time)."""


def slug(value: Any, separator: str = "-") -> str:
    """Lower-case ASCII words joined by `separator`: 'Orders API (EU)' -> 'orders-api-eu'."""
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", separator, text.lower()).strip(separator)


def concat(value: Any, *others: Any) -> Any:
    """Join lists into one list, or strings into one string."""
    if isinstance(value, list | tuple):
        out = list(value)
        for other in others:
            out.extend(other if isinstance(other, list | tuple) else [other])
        return out
    return "".join(str(v) for v in (value, *others))


def to_json(value: Any, indent: int | None = None) -> str:
    """JSON text, keys in order, no HTML escaping."""
    return _json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")


def b64encode(value: Any) -> str:
    return base64.b64encode(str(value).encode()).decode()


def b64decode(value: Any) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"b64decode: not base64 text ({exc})") from exc


def sha256(value: Any) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def xml_text(value: Any) -> str:
    """Text safe inside an XML element or attribute (REST-XML bodies): & < > " ' escaped."""
    return xml.sax.saxutils.escape(str(value), {'"': "&quot;", "'": "&apos;"})


class JiraText(str):
    """Text already escaped for JIRA wiki markup: the `jira` filter leaves it as it is."""

    __slots__ = ()


# Characters that open markup wherever they stand: links [..|..], macros {html} {code}, tables
# |, images !..!, and the inline effects * + ^ ~ ?? (bold, inserted, super/subscript, citation).
_JIRA_ANYWHERE = re.compile(r"[\[\]{}|!*+^~?]")
# `_` and `-` open emphasis, strikethrough and dashes only at a word's edge, so snake_case and
# kebab-case names stay as they are; `-`, `#` and `*` at a line's start make lists and rules.
_JIRA_AT_EDGE = re.compile(r"(?<![0-9A-Za-z])[-_]|[-_](?![0-9A-Za-z])|^(\s*)#", re.MULTILINE)


def jira_text(value: Any) -> JiraText:
    """Text shown literally in JIRA wiki markup (a description, a comment): every character
    that would open markup is escaped with a backslash, a backslash itself as `&#92;` (two
    backslashes are a line break there). Text escaped already is returned as it is."""
    if isinstance(value, JiraText):
        return value
    text = str(value).replace("\\", "&#92;")
    text = _JIRA_ANYWHERE.sub(lambda m: "\\" + m.group(0), text)
    text = _JIRA_AT_EDGE.sub(
        lambda m: f"{m.group(1)}\\#" if m.group(1) is not None else "\\" + m.group(0), text
    )
    return JiraText(text)


def regex_replace(value: Any, pattern: str, replacement: str = "", count: int = 0) -> str:
    """re.sub, bounded: a pattern that backtracks without end is stopped after a short time.

    The `regex` module is used because it can time out; a match in `re` cannot be interrupted.
    """
    if len(pattern) > _MAX_PATTERN:
        raise ValueError(f"regex_replace: pattern longer than {_MAX_PATTERN} characters")
    try:
        return regex.sub(pattern, replacement, str(value), count=count, timeout=_REGEX_TIMEOUT)
    except TimeoutError:
        raise TemplateLimitError(
            f"regex_replace: {pattern!r} ran longer than {_REGEX_TIMEOUT * 1000:.0f} ms"
        ) from None
    except regex.error as exc:
        raise ValueError(f"regex_replace: bad pattern {pattern!r}: {exc}") from None


PAO_FILTERS = {
    "slug": slug,
    "concat": concat,
    "json": to_json,
    "yaml": to_yaml,
    "b64encode": b64encode,
    "b64decode": b64decode,
    "sha256": sha256,
    "regex_replace": regex_replace,
    "xml": xml_text,
    "jira": jira_text,
}
