"""A Jira Data Center REST v2 server for `pao up` and tests, built on the jira820 package.

Run as `python -m pao.devstack.jira_server --host 127.0.0.1 --port N [--projects PLAT,DBA]
[--persist FILE]`.

jira820 models one project; PAO files into several. Its project endpoints answer for that one
project whatever key is asked, so this server answers them itself, per project (an unknown key
is a 404, as on a real JIRA), and adds the correlation-id custom field that tickets carry.
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from jira820 import Config, Store, make_app
from jira820 import server_read as jira820_read
from jira820.serialize import Serializer

from pao.devstack.jira import CORRELATION_FIELD, CORRELATION_FIELD_NAME, DEFAULT_PROJECTS

#: The project jira820 seeds its sample issues into, kept apart from the projects PAO files into.
SAMPLE_PROJECT = "PAOSAMPLE"

#: Statuses platform teams close tickets with besides Done; jira820's defaults lack them.
EXTRA_STATUSES = (("Rejected", "done", "10100"), ("Won't Do", "done", "10101"))


#: Names the projects show; a project without one is named after its key.
PROJECT_NAMES = {
    "PLATFORM": "Platform Engineering",
    "PLAT": "Platform",
    "DBA": "Database Administration",
    "SEC": "Security",
    "DATA": "Data Engineering",
    "OPS": "Operations",
}


class CorrelationSerializer(Serializer):
    """Issues show the correlation id they were filed with, as a JIRA custom field."""

    def issue_fields(self, it: dict[str, Any], base_url: str = "") -> dict[str, Any]:
        fields: dict[str, Any] = super().issue_fields(it, base_url)
        fields[CORRELATION_FIELD] = it.get("correlation_id")
        return fields


class ProjectStore(Store):
    """A jira820 store that also accepts issues in a fixed set of projects and keeps the
    correlation id an issue is filed with."""

    def __init__(self, config: Config, projects: Iterable[str]) -> None:
        # Set before seeding: the base constructor may already ask for project keys.
        self.extra_projects = frozenset(projects)
        super().__init__(config)
        self.serializer = CorrelationSerializer(self)

    def project_keys(self) -> set[str]:
        """Projects with issues, plus the configured ones (which may have none yet)."""
        return set(super().project_keys()) | self.extra_projects

    def projects(self) -> list[str]:
        """Every project key, jira820's sample project included."""
        return sorted(self.project_keys() | {self.config.project_key})

    def has_project(self, key: str) -> bool:
        return key == self.config.project_key or key in self.project_keys()

    def create_issue(self, fields: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = super().create_issue(fields)
        correlation_id = (fields or {}).get(CORRELATION_FIELD)
        if correlation_id is not None:
            self.issues[created["key"]]["correlation_id"] = str(correlation_id)
            self._touch_persist()
        return created


projects_router = APIRouter()


def _store(request: Request) -> ProjectStore:
    store: ProjectStore = request.app.state.store
    return store


def _no_project(key: str) -> JSONResponse:
    return JSONResponse(
        {"errorMessages": [f"No project could be found with key '{key}'."], "errors": {}},
        status_code=404,
    )


def _project(request: Request, key: str, *, full: bool = False) -> dict[str, Any]:
    store = _store(request)
    base = str(request.base_url).rstrip("/")
    sample = key == store.config.project_key
    project: dict[str, Any] = {
        "self": f"{base}/rest/api/2/project/{key}",
        "id": "10000" if sample else str(10001 + zlib.crc32(key.encode()) % 89999),
        "key": key,
        "name": store.config.project_name if sample else PROJECT_NAMES.get(key, key),
        "projectTypeKey": "software",
    }
    if full:
        project["issueTypes"] = [
            store.serializer.issuetype_obj(name) for name, _id in store.config.issue_types
        ]
        project["components"] = []
        project["versions"] = []
        project["assigneeType"] = "UNASSIGNED"
    return project


def _correlation_field() -> dict[str, Any]:
    custom_id = int(CORRELATION_FIELD.removeprefix("customfield_"))
    return {
        "id": CORRELATION_FIELD,
        "name": CORRELATION_FIELD_NAME,
        "custom": True,
        "orderable": True,
        "navigable": True,
        "searchable": True,
        "clauseNames": [f"cf[{custom_id}]", CORRELATION_FIELD_NAME],
        "schema": {
            "type": "string",
            "custom": "com.atlassian.jira.plugin.system.customfieldtypes:textfield",
            "customId": custom_id,
        },
    }


@projects_router.get("/rest/api/2/project")
def list_projects(request: Request) -> list[dict[str, Any]]:
    return [_project(request, key) for key in _store(request).projects()]


@projects_router.get("/rest/api/2/project/{key}", response_model=None)
def get_project(key: str, request: Request) -> dict[str, Any] | JSONResponse:
    if not _store(request).has_project(key):
        return _no_project(key)
    return _project(request, key, full=True)


@projects_router.get("/rest/api/2/project/{key}/statuses", response_model=None)
def project_statuses(key: str, request: Request) -> Any:
    if not _store(request).has_project(key):
        return _no_project(key)
    return jira820_read.project_statuses(key, request)


@projects_router.get("/rest/api/2/field")
def fields(request: Request) -> list[dict[str, Any]]:
    return [*jira820_read.fields(request), _correlation_field()]


@projects_router.get("/rest/api/2/issue/createmeta")
def createmeta(request: Request, projectKeys: str = "") -> dict[str, Any]:  # noqa: N803 - JIRA's name
    store = _store(request)
    wanted = {k.strip() for k in projectKeys.split(",") if k.strip()}
    keys = store.projects()
    issue_types = jira820_read.createmeta(request)["projects"][0]["issuetypes"]
    for issue_type in issue_types:
        issue_type["fields"] = {
            **issue_type["fields"],
            CORRELATION_FIELD: {
                "required": False,
                "name": CORRELATION_FIELD_NAME,
                "schema": _correlation_field()["schema"],
            },
        }
    return {
        "expand": "projects",
        "projects": [
            {**_project(request, key), "issuetypes": issue_types}
            for key in keys
            if not wanted or key in wanted
        ],
    }


def build_app(store: ProjectStore) -> FastAPI:
    """jira820's application, with the per-project endpoints above answering first."""
    app = make_app(store=store)
    app.include_router(projects_router)
    ours = len(projects_router.routes)
    routes = app.router.routes
    routes[:] = routes[-ours:] + routes[:-ours]
    return app


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
    uvicorn.run(build_app(store), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
