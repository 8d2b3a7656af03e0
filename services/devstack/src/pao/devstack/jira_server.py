"""A Jira Data Center REST v2 server for `pao up` and tests, built on the jira820 package.

Run as `python -m pao.devstack.jira_server --host 127.0.0.1 --port N [--projects PLAT,DBA]
[--persist FILE]`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

import uvicorn
from jira820 import Config, Store, make_app

from pao.devstack.jira import DEFAULT_PROJECTS

#: The project jira820 seeds its sample issues into, kept apart from the projects PAO files into.
SAMPLE_PROJECT = "PAOSAMPLE"

#: Statuses platform teams close tickets with besides Done; jira820's defaults lack them.
EXTRA_STATUSES = (("Rejected", "done", "10100"), ("Won't Do", "done", "10101"))


class ProjectStore(Store):
    """A jira820 store that also accepts issues in a fixed set of projects."""

    def __init__(self, config: Config, projects: Iterable[str]) -> None:
        # Set before seeding: the base constructor may already ask for project keys.
        self.extra_projects = frozenset(projects)
        super().__init__(config)

    def project_keys(self) -> set[str]:
        """Projects with issues, plus the configured ones (which may have none yet)."""
        return set(super().project_keys()) | self.extra_projects


def build_config(*, host: str, port: int, persist: str | None) -> Config:
    """A small seeded world: one module, a handful of sample issues, one sprint."""
    config = Config(
        host=host,
        port=port,
        project_key=SAMPLE_PROJECT,
        project_name="PAO sample project",
        persist=persist,
        modules=["Platform"],
        components_extra=[],
        epics_per_module=1,
        children_per_epic=(1, 2),
        standalone_per_module=2,
        history_per_module=1,
        sprints_per_scrum_board=1,
    )
    config.statuses = [*config.statuses, *(list(status) for status in EXTRA_STATUSES)]
    return config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pao.devstack.jira_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--projects",
        default=",".join(DEFAULT_PROJECTS),
        help="comma-separated project keys that accept new issues",
    )
    parser.add_argument("--persist", default=None, help="JSON file keeping issues across restarts")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the JIRA REST API until SIGTERM or SIGINT."""
    args = parse_args(argv)
    projects = [key.strip().upper() for key in args.projects.split(",") if key.strip()]
    config = build_config(host=args.host, port=args.port, persist=args.persist)
    store = ProjectStore(config, projects)
    uvicorn.run(make_app(store=store), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
