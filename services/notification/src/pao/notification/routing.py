"""Who hears about what, and through which channel: the notifications file.

The file is YAML, named by PAO_NOTIFICATIONS_FILE. Without one there are no channels and nothing
is sent. Secrets never sit in the file in clear where it can be avoided (an SMTP password comes
from the environment variable `password_env` names) and never appear in a repr or an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

#: The environment variable naming the notifications file.
NOTIFICATIONS_FILE_ENV = "PAO_NOTIFICATIONS_FILE"

#: Events that can notify someone; also the default `events` filter.
NOTIFYING_EVENTS: frozenset[str] = frozenset(
    {
        "ActionAwaitingManual",
        "RequestCompleted",
        "RequestFailed",
        "RequestAborted",
        "RequestEscalated",
        "ApprovalRequested",
        "ResourceExpiring",
    }
)

#: The entry of `teams` used for any team without its own.
ANY_TEAM = "*"


class RoutingError(ValueError):
    """The notifications file is missing, unreadable or invalid; says which file and field."""


# Well under the minute after which the outbox calls an unfinished send interrupted.
_MAX_TIMEOUT_SECONDS = 30.0


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PydanticCustomError("url", "must be an http:// or https:// URL")
    return value


class WebhookChannelConfig(_Config):
    """POSTs a JSON document describing the event to `url`."""

    type: Literal["webhook"]
    # Webhook URLs and headers often carry tokens: keep them out of reprs.
    url: str = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    timeout_seconds: float = Field(default=10.0, gt=0, le=_MAX_TIMEOUT_SECONDS)

    _check_url = field_validator("url")(_http_url)


class SlackChannelConfig(_Config):
    """POSTs a Slack incoming-webhook message (`text` and `blocks`) to `url`."""

    type: Literal["slack"]
    url: str = Field(repr=False)
    timeout_seconds: float = Field(default=10.0, gt=0, le=_MAX_TIMEOUT_SECONDS)

    _check_url = field_validator("url")(_http_url)


class EmailChannelConfig(_Config):
    """Sends plain-text mail through an SMTP server."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    sender: str = Field(alias="from", min_length=3, pattern=r"@")
    starttls: bool = True
    use_tls: bool = Field(default=False, description="Implicit TLS (port 465) instead of STARTTLS.")
    username: str | None = None
    password_env: str | None = Field(
        default=None, description="Environment variable holding the SMTP password."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=_MAX_TIMEOUT_SECONDS)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailChannelConfig:
        if self.use_tls and self.starttls:
            raise PydanticCustomError(
                "tls", "use_tls and starttls exclude each other: set starttls: false for use_tls"
            )
        return self


ChannelConfig = Annotated[
    WebhookChannelConfig | SlackChannelConfig | EmailChannelConfig, Field(discriminator="type")
]


class TeamTarget(_Config):
    """One channel an owning team is reached through, with its address for e-mail."""

    channel: str
    to: str | None = None


class Routing(_Config):
    """The validated notifications file."""

    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    requesters: list[str] = Field(default_factory=list)
    teams: dict[str, list[TeamTarget]] = Field(default_factory=dict)
    events: frozenset[str] = NOTIFYING_EVENTS

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: frozenset[str]) -> frozenset[str]:
        unknown = sorted(events - NOTIFYING_EVENTS)
        if unknown:
            raise PydanticCustomError(
                "event",
                "{unknown} cannot notify anyone; choose from {known}",
                {"unknown": ", ".join(unknown), "known": ", ".join(sorted(NOTIFYING_EVENTS))},
            )
        return events

    @model_validator(mode="after")
    def _references_resolve(self) -> Routing:
        known = ", ".join(sorted(self.channels)) or "none defined"
        for i, name in enumerate(self.requesters):
            if name not in self.channels:
                raise _field_error(f"requesters[{i}]", f"unknown channel {name!r} (known: {known})")
            if name in self.requesters[:i]:
                raise _field_error(f"requesters[{i}]", f"channel {name!r} is listed twice")
        for team, targets in self.teams.items():
            for i, target in enumerate(targets):
                where = f"teams.{team}[{i}]"
                # A notice is unique per event, recipient and channel: a second entry for the
                # same channel would never be sent.
                if any(t.channel == target.channel for t in targets[:i]):
                    raise _field_error(
                        f"{where}.channel", f"channel {target.channel!r} is listed twice"
                    )
                config = self.channels.get(target.channel)
                if config is None:
                    raise _field_error(
                        f"{where}.channel", f"unknown channel {target.channel!r} (known: {known})"
                    )
                if config.type == "email" and not target.to:
                    raise _field_error(f"{where}.to", "an e-mail channel needs the team's address")
        return self

    def team_targets(self, team: str) -> list[TeamTarget]:
        """How to reach `team`: its own entry, else the `*` entry, else nobody."""
        return self.teams.get(team, self.teams.get(ANY_TEAM, []))


def _field_error(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(
        "routing", "{field}: {message}", {"field": field, "message": message}
    )


def _location(loc: tuple[int | str, ...]) -> str:
    parts = list(loc)
    # A channel's errors are located under its type tag too (channels.mail.email.port): drop it.
    if len(parts) > 2 and parts[0] == "channels" and parts[2] in ("webhook", "slack", "email"):
        del parts[2]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_routing(text: str, *, source: str = "<string>") -> Routing:
    """The routing described by YAML `text`; errors name `source` and the offending field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RoutingError(f"{source}{where}: {problem}") from None
    if data is None:
        return Routing()
    if not isinstance(data, dict):
        raise RoutingError(f"{source}: expected a mapping with channels, requesters, teams, events")
    try:
        return Routing.model_validate(data)
    except ValidationError as exc:
        # Only the location and message: pydantic's own text repeats the input, which may hold
        # a token or password.
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = _location(error["loc"])
            problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        raise RoutingError(f"{source}: " + "; ".join(problems)) from None


def load_routing(path: Path | None) -> Routing:
    """The routing in the notifications file at `path`; no file means nothing is sent."""
    if path is None:
        return Routing()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError(f"{path}: cannot read the notifications file: {exc.strerror}") from None
    return parse_routing(text, source=str(path))


def routing_from_environment(environ: Mapping[str, str] = os.environ) -> Routing:
    """The routing in the file PAO_NOTIFICATIONS_FILE names, or none when it is unset."""
    value = environ.get(NOTIFICATIONS_FILE_ENV)
    return load_routing(Path(value) if value else None)
