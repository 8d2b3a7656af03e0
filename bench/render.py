"""Variables engine throughput: renders per second of a whole item (every action), one core.

    uv run python bench/render.py [--seconds 5]

Each render fills every template of every action of the item from a fresh context (the caller,
the request, the inputs of the form's first example), as the fulfilment does before running
actions. Compiled templates are cached by source, as in the service.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from pao.spec.explain import templates_of
from pao.spec.rendering import preview_context, render_actions

REPO = Path(__file__).resolve().parents[1]


def measure(item: dict, seconds: float) -> tuple[float, int]:
    example = item["form"]["schema"]["examples"][0]
    templates = sum(
        1 for a in item["fulfillment"]["actions"] for _, t in templates_of(a[a["type"]]) if "{" in t
    )
    render_actions(item, preview_context(item, example))  # compile once
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for n in range(100):
            render_actions(item, preview_context(item, example, request_id=f"req-{n}"))
        count += 100
    return count / (time.perf_counter() - started), templates


def main(seconds: float) -> None:
    for path in sorted(REPO.glob("catalog/*/*.yaml")):
        if path.parent.name in ("templates", "tests"):
            continue
        item = yaml.safe_load(path.read_text())
        if item.get("kind") != "CatalogItem":
            continue
        rate, templates = measure(item, seconds)
        print(
            f"{item['metadata']['id']:<26} {len(item['fulfillment']['actions'])} action(s), "
            f"{templates:>2} templates: {rate:,.0f} item renders/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    main(parser.parse_args().seconds)
