"""Reading request inputs from a file or from `--set name=value` options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pao.devctl.errors import CliError


def load_inputs(path: Path | None, assignments: list[str] | None = None) -> dict[str, Any]:
    """Inputs from a YAML/JSON file, then `name=value` assignments over them.

    A value is read as YAML, so `replicas=3` is a number and `ha=true` a boolean; quote it to keep
    a string (`version='16'`).
    """
    inputs: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(
                "PAO-CLI-004",
                f"cannot read inputs from {path}: {exc}",
                "Give a YAML or JSON file holding one mapping of field -> value.",
                exit_code=2,
            ) from exc
        if not isinstance(loaded, dict):
            raise CliError(
                "PAO-CLI-004",
                f"{path} does not hold a mapping of field -> value",
                "Write the inputs as `field: value` lines.",
                exit_code=2,
            )
        inputs.update(loaded)
    for assignment in assignments or []:
        name, sep, raw = assignment.partition("=")
        if not sep or not name.strip():
            raise CliError(
                "PAO-CLI-004",
                f"--set {assignment!r} is not name=value",
                "Write --set replicas=3.",
                exit_code=2,
            )
        try:
            inputs[name.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            inputs[name.strip()] = raw
    return inputs


def dump_inputs(inputs: dict[str, Any], path: Path) -> None:
    """Write inputs as YAML (or JSON for a .json path)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(inputs, indent=2) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(inputs, sort_keys=False), encoding="utf-8")
