"""`devctl`: request and follow PAO services from the terminal."""

from __future__ import annotations

import platform
import sys
from typing import Annotated

import typer

from pao.devctl import (
    approvals,
    audit,
    catalog,
    doctor,
    preview,
    requests,
    resources,
    stats,
    templates,
    terraform,
    validate,
)
from pao.devctl.context import Globals, call, globals_of
from pao.devctl.errors import CliError
from pao.devctl.output import OutputFormat, emit, err_console
from pao.devctl.version import __version__, server_mismatch

app = typer.Typer(
    name="devctl",
    help="Request and follow platform services through PAO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
health_app = typer.Typer(
    help="Check that PAO is up and its dependencies answer.", no_args_is_help=True
)
app.add_typer(health_app, name="health")
app.add_typer(catalog.app, name="catalog")
app.add_typer(validate.app, name="validate")
app.add_typer(templates.app, name="test")
app.add_typer(preview.app, name="preview")
app.add_typer(requests.app, name="request")
app.add_typer(resources.app, name="resource")
app.add_typer(approvals.app, name="approvals")
app.add_typer(terraform.app, name="terraform")
app.command("stats")(stats.stats)
app.command("audit")(audit.audit)
app.command("doctor")(doctor.doctor)


def client_version() -> str:
    """devctl's own version (pao/devctl/version.py, which the wheel's metadata also reads)."""
    return __version__


@app.callback()
def main_options(
    ctx: typer.Context,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="PAO gateway URL, e.g. https://pao.example.com.",
            envvar="PAO_ENDPOINT",
            show_envvar=True,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="devctl profile (written by `pao up`) or AWS profile to sign with.",
            envvar="PAO_PROFILE",
            show_envvar=True,
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="SigV4 region of the gateway [default: us-east-1].",
            envvar="PAO_REGION",
            show_envvar=True,
        ),
    ] = None,
    role_arn: Annotated[
        str | None,
        typer.Option(
            "--role-arn", help="Assume this IAM role (STS) before signing, for cross-account use."
        ),
    ] = None,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output",
            "-o",
            help="table for people; json or yaml for scripts.",
            case_sensitive=False,
        ),
    ] = OutputFormat.table,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show each HTTP call on stderr: method, path, status, time, correlation id.",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="As --verbose, plus the names of the signed headers (never their values) and "
            "each response body, shortened.",
        ),
    ] = False,
) -> None:
    """Request and follow platform services through PAO."""
    ctx.obj = Globals(endpoint, profile, region, role_arn, output, verbose or debug, debug)


@health_app.command("check")
def health_check(ctx: typer.Context) -> None:
    """Is the gateway up? (GET /api/v1/health)"""
    data = call(ctx, "GET", "/health")
    emit(data, globals_of(ctx).output)


@health_app.command("ready")
def health_ready(ctx: typer.Context) -> None:
    """Do the database and broker answer? Exits 1 when a part is down. (GET /health/ready)"""
    g = globals_of(ctx)
    data = call(ctx, "GET", "/health/ready", ok_statuses=(503,))
    checks = data.get("checks", [])
    if g.output is OutputFormat.table:
        emit(
            data,
            g.output,
            columns=["component", "ok", "detail", "ms"],
            rows=[(c["name"], c["ok"], c["detail"], c.get("latency_ms")) for c in checks],
            title=f"PAO is {data.get('status', '?').replace('_', ' ')}",
        )
    else:
        emit(data, g.output)
    if data.get("status") != "ready":
        down = ", ".join(c["name"] for c in checks if not c["ok"])
        err_console.print(f"not ready: {down} down", style="red", markup=False)
        raise typer.Exit(1)


@app.command("whoami")
def whoami(ctx: typer.Context) -> None:
    """Show who the gateway sees calling: user, teams, roles. (GET /api/v1/auth/whoami)"""
    emit(call(ctx, "GET", "/auth/whoami"), globals_of(ctx).output)


@app.command("portal")
def portal_cmd(
    ctx: typer.Context,
    print_only: Annotated[
        bool,
        typer.Option("--print", help="Print the link instead of opening it in a browser."),
    ] = False,
) -> None:
    """Open the web portal in your browser, signed in as you. (POST /api/v1/portal/links)

    devctl asks the gateway (a signed call, as always) for a one-time sign-in link bound to
    your identity; it works once, within a minute. Opening it starts a browser session, kept in
    a cookie; the portal then acts with exactly your permissions.
    """
    import webbrowser

    g = globals_of(ctx)
    link = call(ctx, "POST", "/portal/links")
    opened = False if print_only else webbrowser.open(link["url"])
    if g.output is not OutputFormat.table:
        emit({**link, "opened": opened}, g.output)
        return
    if opened:
        err_console.print(f"Opened the portal in your browser as {link['user']}.")
        err_console.print("If no browser came up, open this link (it works once, for a minute):")
    elif not print_only:
        err_console.print("No browser could be opened here; open this link instead:")
    print(link["url"])  # noqa: T201 (the link itself, for a script or a copy)


@app.command("login")
def login_cmd(ctx: typer.Context) -> None:
    """Sign in with your AWS credentials for a PAO session key, kept in devctl's cache until it
    expires. (POST /api/v1/auth/sign-in)

    devctl signs an sts:GetCallerIdentity call with whatever AWS credentials you have (SSO, a
    profile, --role-arn, an instance profile); PAO has STS check it and maps your account and
    role to your PAO user. Later commands sign with the session; a profile with `sign_in: true`
    signs in by itself when the session runs out.
    """
    from pao.devctl.client import sign_in_at

    g = globals_of(ctx)
    session, cache = sign_in_at(
        endpoint=g.endpoint,
        profile_name=g.profile,
        region=g.region,
        role_arn=g.role_arn,
        verbose=g.verbose,
    )
    data = {
        "user": session.user,
        "principal_arn": session.principal_arn,
        "access_key_id": session.access_key_id,
        "expires_at": session.expires_at.isoformat(),
        "cache": str(cache),
    }
    if g.output is OutputFormat.table:
        emit(
            data,
            g.output,
            columns=["user", "signed in as", "session key", "until"],
            rows=[(session.user, session.principal_arn, session.access_key_id, data["expires_at"])],
        )
    else:
        emit(data, g.output)


@app.command("logout")
def logout_cmd(ctx: typer.Context) -> None:
    """Forget the cached session of this endpoint (and --role-arn / --profile)."""
    from pao.devctl.client import forget_session

    g = globals_of(ctx)
    removed = forget_session(
        endpoint=g.endpoint, profile_name=g.profile, region=g.region, role_arn=g.role_arn
    )
    data = {"removed": str(removed) if removed else None}
    if g.output is OutputFormat.table:
        typer.echo(f"session forgotten ({removed})" if removed else "no session was cached")
    else:
        emit(data, g.output)


@app.command("version")
def version_cmd(ctx: typer.Context) -> None:
    """Show devctl's version and the server's, and whether they fit. (GET /api/v1/version)"""
    g = globals_of(ctx)
    client_info = {"version": client_version(), "python": platform.python_version()}
    server = call(ctx, "GET", "/version")
    mismatch = server_mismatch(server.get("version"), server.get("api_version"))
    data = {"client": client_info, "server": server, "compatible": mismatch is None}
    if mismatch:
        data["warning"] = mismatch
        err_console.print(
            f"warning: {mismatch}", style="yellow", markup=False, highlight=False, soft_wrap=True
        )
    if g.output is OutputFormat.table:
        emit(
            data,
            g.output,
            columns=["component", "version", "python"],
            rows=[
                ("devctl", client_info["version"], client_info["python"]),
                ("server", server.get("version"), server.get("python")),
            ],
        )
    else:
        emit(data, g.output)


def main() -> None:
    """Entry point: run the app; a CliError becomes one line on stderr and a non-zero exit."""
    try:
        # Without standalone mode click returns the exit code instead of exiting.
        code = app(standalone_mode=False)
    except CliError as exc:
        err_console.print(
            exc.one_line(), style="red", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", style="red")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - no traceback reaches a user
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # a usage error from click
            exc.show()
            sys.exit(exc.exit_code)
        err_console.print(
            f"error PAO-CLI-000: unexpected {type(exc).__name__}: {exc}. "
            "Rerun with --verbose and report it.",
            style="red",
            markup=False,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
