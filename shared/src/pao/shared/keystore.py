"""The key store: SigV4 access keys, AWS principals, and the identity each one stands for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)


class Identity(BaseModel):
    """Who is calling: a user, the teams they belong to and their roles (`admin`, ...)."""

    model_config = ConfigDict(frozen=True)

    user: str
    teams: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    access_key_id: str | None = None
    name: str | None = None
    email: str | None = None
    session: str | None = Field(
        default=None, description="The caller's own session name (assumed roles); never the user."
    )
    principal_arn: str | None = Field(
        default=None, description="The AWS caller this identity was mapped from, if any."
    )

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class KeyEntry(BaseModel):
    """One entry of the key store file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_key_id: str = Field(min_length=4)
    secret_access_key: SecretStr
    user: str = Field(min_length=1)
    teams: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    session_token: SecretStr | None = None
    name: str | None = None
    email: str | None = None
    principal_arn: str | None = Field(
        default=None,
        description="IAM user or role ARN this identity has behind AWS API Gateway (no sessions).",
    )

    @field_validator("principal_arn")
    @classmethod
    def _principal_is_a_user_or_role(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_pattern(value)
        return value

    def identity(self) -> Identity:
        return Identity(
            user=self.user,
            teams=self.teams,
            roles=self.roles,
            access_key_id=self.access_key_id,
            name=self.name,
            email=self.email,
        )


@dataclass(frozen=True, slots=True)
class CallerArn:
    """An AWS caller ARN as API Gateway forwards it, taken apart."""

    partition: str
    account: str
    kind: str  # "user" or "role"
    path: str | None  # "/" or "/teams/payments/"; None for an assumed role (STS drops it)
    name: str
    session: str | None = None


_CALLER_RE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>iam|sts)::(?P<account>\d{12}):"
    r"(?P<kind>user|role|assumed-role)(?P<rest>/.+)$"
)
_NAME_RE = re.compile(r"^[\w+=,.@-]{1,128}$")


def parse_caller(arn: str) -> CallerArn | None:
    """The parts of an IAM user, IAM role or STS assumed-role ARN; None for anything else."""
    match = _CALLER_RE.match(arn)
    if not match:
        return None
    *path_parts, name = match["rest"].split("/")[1:]
    if not _NAME_RE.match(name) or not all(_NAME_RE.match(part) for part in path_parts):
        return None
    common = {"partition": match["partition"], "account": match["account"]}
    if match["kind"] == "assumed-role":
        if match["service"] != "sts" or len(path_parts) != 1:
            return None
        return CallerArn(**common, kind="role", path=None, name=path_parts[0], session=name)
    if match["service"] != "iam":
        return None
    path = "/" + "".join(f"{part}/" for part in path_parts)
    return CallerArn(**common, kind=match["kind"], path=path, name=name)


@dataclass(frozen=True, slots=True)
class _Pattern:
    partition: str
    account: str
    kind: str
    path: re.Pattern[str] | None  # None: any path
    name: str

    def matches(self, caller: CallerArn) -> bool:
        if (caller.partition, caller.account, caller.kind, caller.name) != (
            self.partition,
            self.account,
            self.kind,
            self.name,
        ):
            return False
        # An assumed-role ARN carries no role path; a role name is unique in its account.
        return self.path is None or caller.path is None or bool(self.path.fullmatch(caller.path))


def _parse_pattern(arn: str) -> _Pattern:
    """An IAM user ARN (exact) or role ARN (`*` allowed in its path only) as a pattern."""
    caller = parse_caller(arn.replace("*", "x"))
    if caller is None or caller.session is not None:
        raise ValueError(
            f"{arn!r} is not an IAM user or role ARN (arn:aws:iam::ACCOUNT:user/NAME or "
            "arn:aws:iam::ACCOUNT:role/PATH/NAME); assumed-role sessions are named by the "
            "caller and cannot be mapped"
        )
    *path_parts, name = arn.split(":", 5)[5].split("/")[1:]
    if "*" in name or (caller.kind == "user" and "*" in arn):
        raise ValueError(f"{arn!r}: `*` is allowed in a role's path only")
    path_glob = "/" + "".join(f"{part}/" for part in path_parts)
    path = re.compile(".*".join(re.escape(piece) for piece in path_glob.split("*")))
    return _Pattern(caller.partition, caller.account, caller.kind, path, name)


class PrincipalEntry(BaseModel):
    """An AWS principal API Gateway may forward, and the PAO identity it stands for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    role: str | None = Field(default=None, pattern=r"^[\w+=,.@-]{1,64}$")
    arn: str | None = Field(
        default=None, description="IAM user ARN, or role ARN with `*` in its path only."
    )
    user: str = Field(min_length=1)
    teams: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    name: str | None = None
    email: str | None = None

    @model_validator(mode="after")
    def _one_way_to_name_the_principal(self) -> PrincipalEntry:
        if (self.arn is None) == (self.account is None or self.role is None) or (
            self.arn is not None and (self.account or self.role)
        ):
            raise ValueError("give either `account` and `role`, or `arn`")
        self.pattern()
        return self

    def pattern(self) -> _Pattern:
        if self.arn is not None:
            return _parse_pattern(self.arn)
        return _Pattern("aws", str(self.account), "role", None, str(self.role))

    def identity(self, session: str | None) -> Identity:
        return Identity(
            user=self.user,
            teams=self.teams,
            roles=self.roles,
            name=self.name,
            email=self.email,
            session=session,
        )


class KeyStoreError(Exception):
    """The key store file cannot be used; the message says where and why."""


class KeyStore:
    """Access keys by id and principal patterns, in order. Loaded from YAML (a list of keys, or
    `keys:` and `principals:`); `pao up` adds its dev key."""

    def __init__(
        self,
        entries: list[KeyEntry] | None = None,
        principals: list[PrincipalEntry] | None = None,
    ) -> None:
        self._by_key: dict[str, KeyEntry] = {}
        self._principals: list[tuple[_Pattern, PrincipalEntry | KeyEntry]] = []
        for entry in entries or []:
            self.add(entry)
        for principal in principals or []:
            self._principals.append((principal.pattern(), principal))

    def add(self, entry: KeyEntry) -> None:
        self._by_key[entry.access_key_id] = entry
        if entry.principal_arn is not None:
            self._principals.append((_parse_pattern(entry.principal_arn), entry))

    def get(self, access_key_id: str) -> KeyEntry | None:
        return self._by_key.get(access_key_id)

    def principal(self, caller_arn: str) -> Identity | None:
        """The identity of the first configured principal the caller ARN matches, or None.

        An assumed role's session name is recorded on the identity, never used to pick it.
        """
        caller = parse_caller(caller_arn)
        if caller is None:
            return None
        for pattern, entry in self._principals:
            if pattern.matches(caller):
                identity = entry.identity() if isinstance(entry, KeyEntry) else entry.identity(None)
                return identity.model_copy(
                    update={"session": caller.session, "principal_arn": caller_arn}
                )
        return None

    def __len__(self) -> int:
        return len(self._by_key)

    def entries(self) -> list[KeyEntry]:
        """The access keys, in the order they were added."""
        return list(self._by_key.values())

    @classmethod
    def from_file(cls, path: Path) -> KeyStore:
        """Load a YAML list of entries; errors name the file and the entry at fault."""
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise KeyStoreError(f"{path}: cannot read key store: {exc}") from exc
        if raw is None:
            return cls()
        principals_raw: object = []
        if isinstance(raw, dict) and set(raw) <= {"keys", "principals"}:
            principals_raw = raw.get("principals") or []
            raw = raw.get("keys") or []
        if not isinstance(raw, list):
            raise KeyStoreError(f"{path}: expected a list of keys")
        if not isinstance(principals_raw, list):
            raise KeyStoreError(f"{path}: expected `principals` to be a list")
        entries = []
        for index, item in enumerate(raw):
            try:
                entries.append(KeyEntry.model_validate(item))
            except ValidationError as exc:
                raise KeyStoreError(f"{path}: entry {index}: {exc}") from exc
        principals = []
        for index, item in enumerate(principals_raw):
            try:
                principals.append(PrincipalEntry.model_validate(item))
            except ValidationError as exc:
                raise KeyStoreError(f"{path}: principal {index}: {exc}") from exc
        return cls(entries, principals)
