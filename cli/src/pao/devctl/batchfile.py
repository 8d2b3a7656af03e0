"""Batch files: the rows of a YAML or CSV file of requests to submit, abort or retry, checked.

A file is read and checked whole before anything is sent: one that cannot be parsed, lacks a
column or holds a value of the wrong type is refused with every problem named by row and field.
CSV cells are typed by each field's schema in the item's form; a submit row without an
idempotency key gets one derived from the file's name and the row's item and inputs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pao.devctl.errors import CliError

INVALID = "PAO-CLI-004"
SUBMIT_KEYS = ("item_id", "inputs", "idempotency_key")
ID_KEYS = ("request_id", "reason")
INPUT_PREFIX = "inputs."

#: Each item's field schemas (see `field_schemas`), by item id.
Forms = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class Problem:
    """What is wrong with one row of a batch file."""

    row: int  # 1 for the first row; 0 for the file as a whole (e.g. the CSV header)
    where: str
    message: str

    def detail(self) -> dict[str, object]:
        place = f"row {self.row} {self.where}".strip() if self.row else self.where
        return {"field": place, "message": self.message}


@dataclass(frozen=True)
class SubmitRow:
    row: int
    item_id: str
    inputs: dict[str, Any]
    idempotency_key: str


@dataclass(frozen=True)
class IdRow:
    row: int
    request_id: str
    reason: str | None


def _invalid(path: Path, problems: list[Problem]) -> CliError:
    first = problems[0]
    head = f"row {first.row} " if first.row else ""
    return CliError(
        INVALID,
        f"{path.name} is not a valid batch file ({len(problems)} problem(s), first: "
        f"{head}{first.where}: {first.message}); nothing was sent",
        "Fix the rows named and run it again (the format: docs/devctl.md, Batches)",
        details=[p.detail() for p in problems[1:]],
        exit_code=2,
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(
            INVALID, f"cannot read {path}: {exc}", "Give a UTF-8 YAML or CSV file", exit_code=2
        ) from exc


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _yaml_rows(path: Path) -> list[Any]:
    """The entries of a YAML (or JSON) file holding one list."""
    try:
        loaded = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CliError(
            INVALID,
            f"{path.name} is not valid YAML{where}: {problem}; nothing was sent",
            "A batch file holds one list, an entry per row (`- item_id: ...`)",
            exit_code=2,
        ) from exc
    if not isinstance(loaded, list) or not loaded:
        raise CliError(
            INVALID,
            f"{path.name} does not hold a list of rows; nothing was sent",
            "Write one entry per row: `- item_id: sqs-queue` with its `inputs:` below",
            exit_code=2,
        )
    return loaded


def _csv_rows(path: Path, required: str, known: Callable[[str], bool]) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line; `required` must be a column, each column
    `known`. Cells are kept as text."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    header = reader.fieldnames or []
    problems = [Problem(0, "header", f"no `{required}` column")] if required not in header else []
    problems += [
        Problem(0, "header", f"column `{name}` appears more than once")
        for name in sorted({n for n in header if header.count(n) > 1})
    ]
    problems += [
        Problem(0, "header", f"unknown column `{name}`") for name in header if not known(name)
    ]
    rows: list[dict[str, str]] = []
    try:
        for n, raw in enumerate(reader, start=1):
            if None in raw:
                problems.append(Problem(n, "", f"{len(raw[None])} more cell(s) than the header"))
            rows.append({k: (v or "").strip() for k, v in raw.items() if k is not None})
    except csv.Error as exc:
        problems.append(Problem(0, f"line {reader.line_num}", f"not valid CSV: {exc}"))
    if not rows and not problems:
        problems.append(Problem(0, "file", "no rows below the header"))
    if problems:
        raise _invalid(path, problems)
    return rows


def field_schemas(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each field's schema in a form, including fields under allOf/anyOf/oneOf and if/then/else
    (the first definition of a name wins)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        for name, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict):
                found.setdefault(name, sub)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key) or []:
                walk(sub)
        for key in ("then", "else"):
            walk(node.get(key))

    walk(schema)
    return found


def _types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    return [declared] if isinstance(declared, str) else list(declared or [])


def coerce(raw: str, schema: dict[str, Any]) -> Any:
    """A CSV cell as the value its field's schema types it: integer, number, boolean, array
    (a JSON list, or items separated by commas) or object (JSON); text otherwise.

    Raises ValueError saying what was expected."""
    types = _types(schema)
    if not types or "string" in types:
        return raw
    for kind in types:
        try:
            return _as(kind, raw, schema)
        except ValueError:
            continue
    wanted = " or ".join(types)
    raise ValueError(f"{raw!r} is not {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}")


def _as(kind: str, raw: str, schema: dict[str, Any]) -> Any:
    text = raw.strip()
    if kind == "integer":
        return int(text)
    if kind == "number":
        try:
            return int(text)
        except ValueError:
            value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if kind == "boolean":
        lowered = text.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        raise ValueError(text)
    if kind == "array":
        if text.startswith("["):
            value = json.loads(text)
            if not isinstance(value, list):
                raise ValueError(text)
            return value
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [coerce(part.strip(), items) for part in text.split(",") if part.strip()]
    if kind == "object":
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(text)
        return value
    raise ValueError(text)


def derived_key(path: Path, item_id: str, inputs: dict[str, Any]) -> str:
    """The idempotency key of a row that has none: stable for the same file name, item and
    inputs, so the same file submitted again makes nothing twice."""
    content = json.dumps({"item_id": item_id, "inputs": inputs}, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{path.name}\n{content}".encode()).hexdigest()
    return f"batch-{digest[:40]}"


def _text(value: Any) -> str | None:
    """A key or id as text: YAML reads an unquoted 123 as a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        return str(value).strip() or None
    return None


def _submit_rows_yaml(path: Path) -> list[SubmitRow]:
    rows: list[SubmitRow] = []
    problems: list[Problem] = []
    for n, entry in enumerate(_yaml_rows(path), start=1):
        if not isinstance(entry, dict):
            problems.append(Problem(n, "", "is not a mapping with item_id and inputs"))
            continue
        problems += [
            Problem(n, str(k), f"unknown key (a row has {', '.join(SUBMIT_KEYS)})")
            for k in entry
            if k not in SUBMIT_KEYS
        ]
        item_id = entry.get("item_id")
        inputs = entry.get("inputs") if entry.get("inputs") is not None else {}
        key = entry.get("idempotency_key")
        if item_id is None or item_id == "":
            problems.append(Problem(n, "item_id", "missing; give the catalog item id"))
        elif not isinstance(item_id, str) or not item_id.strip():
            problems.append(Problem(n, "item_id", "must be a catalog item id (text)"))
        if not isinstance(inputs, dict):
            problems.append(Problem(n, "inputs", "must be a mapping of field -> value"))
        if key is not None and _text(key) is None:
            problems.append(Problem(n, "idempotency_key", "must be text"))
        if isinstance(inputs, dict):
            problems += _not_json(n, inputs)
        if isinstance(item_id, str) and item_id.strip() and isinstance(inputs, dict):
            item_id = item_id.strip()
            given = _text(key)
            rows.append(SubmitRow(n, item_id, inputs, given or derived_key(path, item_id, inputs)))
    if problems:
        raise _invalid(path, problems)
    return rows


def _not_json(row: int, inputs: dict[str, Any]) -> list[Problem]:
    """YAML reads an unquoted 2026-12-24 as a date, which JSON cannot carry."""
    problems = []
    for name, value in inputs.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            kind = type(value).__name__
            message = f"{value} reads as a {kind} in YAML; quote it to send it as text"
            problems.append(Problem(row, f"inputs.{name}", message))
    return problems


def _submit_rows_csv(path: Path, forms_of: Callable[[Iterable[str]], Forms]) -> list[SubmitRow]:
    cells = _csv_rows(
        path,
        "item_id",
        lambda c: (
            c in ("item_id", "idempotency_key")
            or (c.startswith(INPUT_PREFIX) and len(c) > len(INPUT_PREFIX))
        ),
    )
    problems = [Problem(n, "item_id", "empty") for n, c in enumerate(cells, 1) if not c["item_id"]]
    forms = forms_of(c["item_id"] for c in cells if c["item_id"])
    rows: list[SubmitRow] = []
    for n, c in enumerate(cells, start=1):
        item_id = c["item_id"]
        if not item_id:
            continue
        schemas = forms.get(item_id, {})
        inputs: dict[str, Any] = {}
        for column, raw in c.items():
            name = column.removeprefix(INPUT_PREFIX)
            if not column.startswith(INPUT_PREFIX) or raw == "":
                continue  # an empty cell leaves the field out: the form's default applies
            try:
                inputs[name] = coerce(raw, schemas.get(name, {}))
            except ValueError as exc:
                problems.append(Problem(n, column, f"{exc} (the field's type in {item_id})"))
        key = c.get("idempotency_key") or derived_key(path, item_id, inputs)
        rows.append(SubmitRow(n, item_id, inputs, key))
    if problems:
        raise _invalid(path, problems)
    return rows


def _no_repeated(path: Path, keyed: Iterable[tuple[int, str]], what: str, hint: str) -> None:
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for row, key in keyed:
        if key in first:
            problems.append(Problem(row, what, f"the same as row {first[key]}'s; {hint}"))
        first.setdefault(key, row)
    if problems:
        raise _invalid(path, problems)


def submit_rows(path: Path, forms_of: Callable[[Iterable[str]], Forms]) -> list[SubmitRow]:
    """The rows of a submit file, checked; `forms_of` gives the forms that type CSV cells."""
    rows = _submit_rows_csv(path, forms_of) if _is_csv(path) else _submit_rows_yaml(path)
    _no_repeated(
        path,
        ((r.row, r.idempotency_key) for r in rows),
        "idempotency_key",
        "give each row its own key (rows without one differ in item or inputs)",
    )
    return rows


def id_rows(path: Path) -> list[IdRow]:
    """The rows of an abort or retry file: CSV with request_id (and reason) columns, or a YAML
    list of ids or of `{request_id, reason}` mappings."""
    problems: list[Problem] = []
    rows: list[IdRow] = []
    if _is_csv(path):
        for n, c in enumerate(_csv_rows(path, "request_id", lambda c: c in ID_KEYS), start=1):
            if not c["request_id"]:
                problems.append(Problem(n, "request_id", "empty"))
            else:
                rows.append(IdRow(n, c["request_id"], c.get("reason") or None))
    else:
        for n, entry in enumerate(_yaml_rows(path), start=1):
            if isinstance(entry, str):
                entry = {"request_id": entry}
            if not isinstance(entry, dict):
                problems.append(Problem(n, "", "is neither a request id nor a mapping"))
                continue
            problems += [
                Problem(n, str(k), f"unknown key (a row has {', '.join(ID_KEYS)})")
                for k in entry
                if k not in ID_KEYS
            ]
            request_id = entry.get("request_id")
            reason = entry.get("reason")
            if not isinstance(request_id, str) or not request_id.strip():
                problems.append(Problem(n, "request_id", "missing; give the request id"))
            elif reason is not None and not (isinstance(reason, str) and reason.strip()):
                problems.append(Problem(n, "reason", "must be text"))
            else:
                rows.append(IdRow(n, request_id.strip(), reason.strip() if reason else None))
    if problems:
        raise _invalid(path, problems)
    _no_repeated(path, ((r.row, r.request_id) for r in rows), "request_id", "list it once")
    return rows
