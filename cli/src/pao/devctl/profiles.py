"""devctl profiles: endpoint, region and (for local stacks) an access key, in one YAML file."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Profile(BaseModel):
    """Where a PAO lives and, optionally, the key to sign with."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    aws_profile: str | None = Field(default=None, description="AWS profile to sign with instead.")
    role_arn: str | None = None
    sign_in: bool = Field(
        default=False,
        description="Sign in with the AWS credentials (sts:GetCallerIdentity) for a session key.",
    )


class Config(BaseModel):
    """The whole config file."""

    model_config = ConfigDict(extra="ignore")

    default_profile: str | None = None
    profiles: dict[str, Profile] = {}


def config_path() -> Path:
    """`$PAO_CONFIG_FILE`, else `$XDG_CONFIG_HOME/pao/config.yaml` (~/.config by default)."""
    explicit = os.environ.get("PAO_CONFIG_FILE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pao" / "config.yaml"


def load_config(path: Path | None = None) -> Config:
    """The config file's content; an empty config when there is none."""
    path = path or config_path()
    if not path.exists():
        return Config()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return Config.model_validate(raw)


def save_profile(
    name: str, profile: Profile, *, make_default: bool, path: Path | None = None
) -> Path:
    """Add or replace one profile; the file is readable by its owner only (it holds a secret)."""
    path = path or config_path()
    config = load_config(path)
    config.profiles[name] = profile
    if make_default or config.default_profile is None:
        config.default_profile = name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(config.model_dump(exclude_none=True), out, sort_keys=False)
    tmp.replace(path)
    return path
