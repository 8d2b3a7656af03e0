"""Behind API Gateway: which forwarded AWS callers map to which PAO identity, and which do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from pao.shared.keystore import KeyEntry, KeyStore, KeyStoreError, PrincipalEntry

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"


@pytest.fixture
def keys() -> KeyStore:
    return KeyStore.from_file(REPO / "deploy" / "keys.example.yaml")


def test_every_session_of_a_mapped_role_is_the_mapped_user(keys: KeyStore) -> None:
    for session in ("erin", "platform-admin", "ci-bot"):
        arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/payments-developers/{session}"
        identity = keys.principal(arn)
        assert identity is not None
        assert identity.user == "payments-developers"
        assert identity.roles == ()
        assert identity.session == session


def test_a_role_path_pattern_matches_the_role_in_any_path_below_it(keys: KeyStore) -> None:
    inside = keys.principal(f"arn:aws:iam::{ACCOUNT}:role/platform/eu/pao-admins")
    assert inside is not None
    assert inside.user == "platform-admins"
    assert keys.principal(f"arn:aws:iam::{ACCOUNT}:role/other/pao-admins") is None
    # STS drops the role path; the role name is unique within its account.
    assumed = keys.principal(f"arn:aws:sts::{ACCOUNT}:assumed-role/pao-admins/dana")
    assert assumed is not None
    assert assumed.user == "platform-admins"


def test_an_iam_user_matches_only_its_exact_entry(keys: KeyStore) -> None:
    identity = keys.principal(f"arn:aws:iam::{ACCOUNT}:user/ci/jenkins")
    assert identity is not None
    assert identity.user == "ci-bot"
    assert identity.session is None
    assert keys.principal(f"arn:aws:iam::{ACCOUNT}:user/jenkins") is None
    assert keys.principal(f"arn:aws:iam::{ACCOUNT}:user/platform-admin") is None


@pytest.mark.parametrize(
    "arn",
    [
        f"arn:aws:sts::{ACCOUNT}:assumed-role/admins/platform-admin",
        "arn:aws:sts::999999999999:assumed-role/payments-developers/erin",
        f"arn:aws:iam::{ACCOUNT}:root",
        f"arn:aws:sts::{ACCOUNT}:federated-user/platform-admin",
        "platform-admin",
        "",
    ],
)
def test_a_caller_matching_no_entry_has_no_identity(keys: KeyStore, arn: str) -> None:
    assert keys.principal(arn) is None


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (
            {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/devs/erin", "user": "erin"},
            "assumed-role sessions",
        ),
        ({"arn": f"arn:aws:iam::{ACCOUNT}:user/*", "user": "any"}, "path only"),
        ({"arn": f"arn:aws:iam::{ACCOUNT}:role/teams/*", "user": "any"}, "path only"),
        ({"account": ACCOUNT, "user": "any"}, "`account` and `role`"),
        (
            {"account": ACCOUNT, "role": "r", "arn": f"arn:aws:iam::{ACCOUNT}:role/r", "user": "x"},
            "`account` and `role`",
        ),
    ],
)
def test_a_principal_that_could_match_more_than_meant_is_refused_at_load(
    tmp_path: Path, entry: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        PrincipalEntry.model_validate(entry)
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys: []\nprincipals:\n  - {entry!r}\n".replace("'", '"'))
    with pytest.raises(KeyStoreError, match=r"keys.yaml: principal 0"):
        KeyStore.from_file(path)


def test_a_key_principal_arn_cannot_name_a_session() -> None:
    with pytest.raises(ValueError, match="assumed-role sessions"):
        KeyEntry(
            access_key_id="PAOKEY0001",
            secret_access_key="s",
            user="erin",
            principal_arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/devs/erin",
        )
