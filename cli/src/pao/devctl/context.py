"""What every devctl command shares: the global options and a way to call the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from pao.devctl.output import OutputFormat

if TYPE_CHECKING:
    from pao.devctl.client import PaoClient


@dataclass
class Globals:
    """The global options, resolved."""

    endpoint: str | None
    profile: str | None
    region: str | None
    role_arn: str | None
    output: OutputFormat
    verbose: bool
    #: --debug: --verbose plus the signed header names and each response body
    debug: bool = False

    def client(self) -> PaoClient:
        # Imported here: botocore and httpx are slow to import, and many commands work offline.
        from pao.devctl.client import PaoClient, resolve_target

        target = resolve_target(
            endpoint=self.endpoint,
            profile_name=self.profile,
            region=self.region,
            role_arn=self.role_arn,
            verbose=self.verbose,
        )
        return PaoClient(target, verbose=self.verbose, debug=self.debug)


def globals_of(ctx: typer.Context) -> Globals:
    """The global options of this invocation."""
    root = ctx.find_root()
    assert isinstance(root.obj, Globals)
    return root.obj


def call(ctx: typer.Context, method: str, path: str, **kwargs: Any) -> Any:
    """One API call with the invocation's endpoint and credentials."""
    client = globals_of(ctx).client()
    try:
        return client.request(method, path, **kwargs)
    finally:
        client.close()
