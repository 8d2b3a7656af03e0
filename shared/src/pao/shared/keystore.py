"""The key store: SigV4 access keys and the identity each one stands for."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError


class Identity(BaseModel):
    """Who is calling: a user, the teams they belong to and their roles (`admin`, ...)."""

    model_config = ConfigDict(frozen=True)

    user: str
    teams: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    access_key_id: str | None = None
    name: str | None = None
    email: str | None = None

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
        default=None, description="IAM principal this identity has behind AWS API Gateway."
    )

    def identity(self) -> Identity:
        return Identity(
            user=self.user,
            teams=self.teams,
            roles=self.roles,
            access_key_id=self.access_key_id,
            name=self.name,
            email=self.email,
        )


class KeyStoreError(Exception):
    """The key store file cannot be used; the message says where and why."""


class KeyStore:
    """Access keys by id. Loaded from YAML (a list of entries); `pao up` adds its dev key."""

    def __init__(self, entries: list[KeyEntry] | None = None) -> None:
        self._by_key: dict[str, KeyEntry] = {}
        for entry in entries or []:
            self.add(entry)

    def add(self, entry: KeyEntry) -> None:
        self._by_key[entry.access_key_id] = entry

    def get(self, access_key_id: str) -> KeyEntry | None:
        return self._by_key.get(access_key_id)

    def by_principal(self, principal_arn: str) -> KeyEntry | None:
        """The entry mapped to an IAM principal (trusted API Gateway mode)."""
        return next((e for e in self._by_key.values() if e.principal_arn == principal_arn), None)

    def __len__(self) -> int:
        return len(self._by_key)

    @classmethod
    def from_file(cls, path: Path) -> KeyStore:
        """Load a YAML list of entries; errors name the file and the entry at fault."""
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise KeyStoreError(f"{path}: cannot read key store: {exc}") from exc
        if raw is None:
            return cls()
        if isinstance(raw, dict) and "keys" in raw:
            raw = raw["keys"]
        if not isinstance(raw, list):
            raise KeyStoreError(f"{path}: expected a list of keys")
        entries = []
        for index, item in enumerate(raw):
            try:
                entries.append(KeyEntry.model_validate(item))
            except ValidationError as exc:
                raise KeyStoreError(f"{path}: entry {index}: {exc}") from exc
        return cls(entries)
