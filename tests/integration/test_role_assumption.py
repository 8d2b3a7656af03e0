"""--role-arn: devctl assumes the role through STS (moto, over HTTP) and signs with the result."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from botocore.credentials import ReadOnlyCredentials

from pao.devctl.client import resolve_target, sign
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.sigv4 import SignedRequest, verify

ROLE = "arn:aws:iam::123456789012:role/pao-developer"


def test_role_arn_yields_temporary_credentials_the_gateway_can_verify(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("PAO_CONFIG_FILE", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIABASEKEY000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "base-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-creds"))

    target = resolve_target(
        endpoint="http://127.0.0.1:9", profile_name=None, region=None, role_arn=ROLE
    )

    creds = target.credentials
    assert isinstance(creds, ReadOnlyCredentials)
    assert creds.access_key != "AKIABASEKEY000000001"
    assert creds.token, "assumed-role credentials carry a session token"

    url = "http://127.0.0.1:9/api/v1/auth/whoami"
    headers = sign(target, "GET", url, b"", {})
    assert headers["X-Amz-Security-Token"] == creds.token
    # A gateway knowing these temporary credentials accepts the call, token included.
    keys = KeyStore(
        [
            KeyEntry(
                access_key_id=creds.access_key,
                secret_access_key=creds.secret_key,
                session_token=creds.token,
                user="assumed",
            )
        ]
    )
    parts = urlsplit(url)
    lowered = {k.lower(): v for k, v in headers.items()} | {"host": parts.netloc}
    request = SignedRequest("GET", parts.netloc, parts.path, lowered, b"")
    assert verify(request, keys, region="us-east-1").user == "assumed"
