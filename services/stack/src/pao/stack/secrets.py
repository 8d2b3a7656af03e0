"""`pao secrets init`: PAO's own secrets as SecureString parameters in AWS Parameter Store.

Each value comes from an environment variable, else a prompt that does not echo, else (the
webhook secret, with --generate) from `secrets.token_urlsafe`. It goes to Parameter Store and
nowhere else: the command prints paths, types, versions and what it did, never a value. A
parameter that exists is kept unless --overwrite is given, so running it again changes nothing.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError, ClientError

from pao.shared.logs import configure_logging
from pao.shared.settings import Settings
from pao.stack.console import Output, fail, running_stack, settings_with

app = typer.Typer(help="PAO's own secrets in AWS Parameter Store.", no_args_is_help=True)


@dataclass(frozen=True)
class OwnSecret:
    """A secret PAO itself uses: the setting holding its path, the variable giving its value."""

    label: str
    setting: str
    variable: str
    can_generate: bool = False


OWN_SECRETS = (
    OwnSecret("JIRA API token", "jira_token_secret", "PAO_JIRA_TOKEN"),
    OwnSecret("GitHub token (git catalog)", "catalog_git_token_secret", "PAO_GITHUB_TOKEN"),
    OwnSecret(
        "GitHub webhook secret",
        "github_webhook_secret_path",
        "PAO_GITHUB_WEBHOOK_SECRET",
        can_generate=True,
    ),
)


#: The status of a secret that has no parameter and was given no value.
MISSING = "missing"


@dataclass(frozen=True)
class Parameter:
    """What `init` did with one secret (no value: there is none to show)."""

    name: str
    path: str
    type: str | None
    version: int | None
    status: str
    source: str | None = None


@dataclass(frozen=True)
class ParameterStore:
    """An SSM client and a description of where it goes."""

    client: Any
    where: str


def parameter_store(settings: Settings) -> ParameterStore:
    """SSM at PAO_AWS_ENDPOINT_URL (or botocore's own endpoint settings); with neither, beside a
    running `pao up`, its embedded moto with the stack's key."""
    import boto3

    endpoint = settings.aws_endpoint_url
    session = boto3.session.Session()
    where = f"AWS Parameter Store ({settings.aws_region})"
    configured = (
        endpoint or os.environ.get("AWS_ENDPOINT_URL_SSM") or os.environ.get("AWS_ENDPOINT_URL")
    )
    stack = None if configured else running_stack(settings)
    aws = (stack or {}).get("components", {}).get("aws") or {}
    if aws.get("embedded"):
        endpoint = str(aws["address"])
        key = configparser.ConfigParser()
        key.read(aws["credentials_file"], encoding="utf-8")
        session = boto3.session.Session(
            aws_access_key_id=key["default"]["aws_access_key_id"],
            aws_secret_access_key=key["default"]["aws_secret_access_key"],
        )
        where = f"Parameter Store at {endpoint} (the `pao up` stack in {settings.data_dir})"
    elif configured:
        where = f"Parameter Store at {configured} ({settings.aws_region})"
    client = session.client("ssm", region_name=settings.aws_region, endpoint_url=endpoint)
    return ParameterStore(client, where)


def _existing(ssm: Any, path: str) -> dict[str, Any] | None:
    """The parameter's metadata (never its value), or None."""
    answer = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [path]}]
    )
    found = answer.get("Parameters") or []
    return dict(found[0]) if found else None


def _value(secret: OwnSecret, path: str, *, generate: bool) -> tuple[str | None, str]:
    """The value to store and where it came from; no value without a terminal to ask in."""
    given = os.environ.get(secret.variable)
    if given:
        return given, f"from ${secret.variable}"
    if generate and secret.can_generate:
        return secrets.token_urlsafe(32), "generated"
    if not sys.stdin.isatty():
        hint = " or pass --generate" if secret.can_generate else ""
        return None, f"set ${secret.variable}{hint}"
    value = typer.prompt(f"{secret.label} for {path}", hide_input=True, err=True).strip()
    if not value:
        fail(f"an empty {secret.label} is not stored")
    return value, "prompted"


def init_secret(
    ssm: Any,
    secret: OwnSecret,
    path: str,
    *,
    kms_key_id: str | None,
    overwrite: bool,
    generate: bool,
) -> Parameter:
    """Create one SecureString, or keep the one there."""
    existing = _existing(ssm, path)
    if existing is not None and not overwrite:
        return Parameter(
            secret.label, path, existing.get("Type"), existing.get("Version"), "exists, kept"
        )
    value, source = _value(secret, path, generate=generate)
    if value is None:
        return Parameter(secret.label, path, None, None, MISSING, source)
    request: dict[str, Any] = {
        "Name": path,
        "Value": value,
        "Type": "SecureString",
        "Description": f"PAO: {secret.label}",
        "Overwrite": existing is not None,
    }
    if kms_key_id:
        request["KeyId"] = kms_key_id
    try:
        answer = ssm.put_parameter(**request)
    except ssm.exceptions.ParameterAlreadyExists:
        # Created by someone else since it was looked up: theirs is kept.
        existing = _existing(ssm, path) or {}
        return Parameter(
            secret.label, path, existing.get("Type"), existing.get("Version"), "exists, kept"
        )
    except (ClientError, BotoCoreError) as exc:
        fail(f"Parameter Store refused {path}: {str(exc).replace(value, '***')}")
        raise
    status = "replaced" if existing is not None else "created"
    return Parameter(secret.label, path, "SecureString", int(answer["Version"]), status, source)


@app.command("init")
def init(
    kms_key_id: Annotated[
        str | None,
        typer.Option(help="KMS key of the SecureStrings.", show_default="the account's aws/ssm"),
    ] = None,
    generate: Annotated[
        bool,
        typer.Option(
            help="Generate the webhook secret when PAO_GITHUB_WEBHOOK_SECRET is unset (give "
            "GitHub the value from Parameter Store)."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace parameters that exist (a new version).")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="A `pao up` state folder: its embedded AWS is used when no endpoint is set.",
            envvar="PAO_DATA_DIR",
            show_default=".pao",
        ),
    ] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json.")] = Output.text,
) -> None:
    """Create PAO's own secrets (JIRA token, GitHub token, webhook secret) as SecureString
    parameters at their configured paths, from PAO_JIRA_TOKEN, PAO_GITHUB_TOKEN and
    PAO_GITHUB_WEBHOOK_SECRET or a hidden prompt; existing ones are kept. Exits 1 if one is
    left missing (no value given and no terminal to ask in)."""
    settings = settings_with(data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)
    store = parameter_store(settings)
    results: list[Parameter] = []
    try:
        for secret in OWN_SECRETS:
            path = getattr(settings, secret.setting)
            if not path:
                name = f"PAO_{secret.setting.upper()}"
                results.append(Parameter(secret.label, "", None, None, f"skipped ({name} empty)"))
                continue
            results.append(
                init_secret(
                    store.client,
                    secret,
                    path,
                    kms_key_id=kms_key_id,
                    overwrite=overwrite,
                    generate=generate,
                )
            )
    except (ClientError, BotoCoreError) as exc:
        fail(f"{store.where}: {exc}")
    if output is Output.json:
        document = {"parameter_store": store.where, "parameters": [asdict(r) for r in results]}
        typer.echo(json.dumps(document, indent=2))
    else:
        typer.echo(store.where)
        width = max(len(r.path) for r in results)
        for r in results:
            version = f"v{r.version}" if r.version is not None else "-"
            source = f" ({r.source})" if r.source else ""
            line = f"  {r.path:<{width}}  {r.type or '-':<12}  {version:<4}  {r.status}{source}"
            typer.echo(line)
    if any(r.status == MISSING for r in results):
        raise typer.Exit(1)
