"""Load and validate a catalog of generated items: seconds for 1,000 items (goal < 2 s).

    uv run python bench/catalog_load.py [--items 1000] [--runs 3]

Items are the repository's three items copied under new ids (their forms, conditional fields
and templates unchanged), written to a temporary catalog folder; each run reads the folder and
validates every file, then the cross-file rules, as a refresh does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from pao.spec.catalog import read_directory, validate_catalog
from pao.spec.variables import parse_template

REPO = Path(__file__).resolve().parents[1]


def generate(root: Path, count: int) -> None:
    sources = sorted(
        p
        for p in (REPO / "catalog").glob("*/*.yaml")
        if p.parent.name in ("compute", "databases", "security")
    )
    for n in range(count):
        source = sources[n % len(sources)]
        item = yaml.safe_load(source.read_text())
        item["metadata"]["id"] = f"{item['metadata']['id']}-{n:04d}"
        # Vary the templates too, so no run is helped by an earlier run's parse cache.
        for action in item["fulfillment"]["actions"]:
            spec = action[action["type"]]
            if "summary" in spec:
                spec["summary"] += f" #{n}"
        folder = root / source.parent.name
        folder.mkdir(exist_ok=True)
        (folder / f"{item['metadata']['id']}.yaml").write_text(
            yaml.safe_dump(item, sort_keys=False)
        )


def main(count: int, runs: int) -> None:
    timings = []
    with tempfile.TemporaryDirectory(prefix="pao-catalog-bench-") as tmp:
        root = Path(tmp)
        generate(root, count)
        for _ in range(runs):
            parse_template.cache_clear()
            started = time.perf_counter()
            report = validate_catalog(read_directory(root))
            timings.append(time.perf_counter() - started)
            assert report.valid, report.problems[:3]
    print(
        f"load + validate {count:,} items: median {statistics.median(timings):.2f} s "
        f"(min {min(timings):.2f} s, max {max(timings):.2f} s, {runs} runs, one core)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    main(args.items, args.runs)
