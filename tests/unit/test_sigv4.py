"""SigV4: what devctl signs, the gateway accepts; every kind of forgery gets its own answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from pao.contracts import errors
from pao.contracts.errors import PaoError
from pao.devctl.client import Target, sign
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.sigv4 import SignedRequest, check_authorization, verify

KEY_ID = "PAOTESTKEY0000000001"
SECRET = "s3cr3t-for-tests-only"
URL = "http://127.0.0.1:8080/api/v1/requests?status=failed&item_id=eks-application"
BODY = b'{"item_id": "eks-application", "inputs": {"name": "web"}}'


@pytest.fixture
def keys() -> KeyStore:
    return KeyStore(
        [
            KeyEntry(
                access_key_id=KEY_ID,
                secret_access_key=SECRET,
                user="dana",
                teams=("payments",),
                roles=(),
            ),
            KeyEntry(
                access_key_id="PAOTEMPKEY0000000001",
                secret_access_key="temp-secret",
                user="ci-bot",
                session_token="the-session-token",
            ),
        ]
    )


def signed(
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    token: str | None = None,
    region: str = "us-east-1",
    body: bytes = BODY,
    method: str = "POST",
    url: str = URL,
) -> SignedRequest:
    target = Target("http://127.0.0.1:8080", region, ReadOnlyCredentials(key_id, secret, token))
    headers = sign(target, method, url, body, {"Content-Type": "application/json"})
    parts = urlsplit(url)
    lowered = {k.lower(): v for k, v in headers.items()}
    lowered["host"] = parts.netloc
    return SignedRequest(
        method=method,
        host=parts.netloc,
        path_qs=parts.path + (f"?{parts.query}" if parts.query else ""),
        headers=lowered,
        body=body,
    )


def rejected(request: SignedRequest, keys: KeyStore, **kwargs: object) -> str:
    with pytest.raises(PaoError) as caught:
        verify(request, keys, region="us-east-1", **kwargs)  # type: ignore[arg-type]
    return caught.value.code.code


def replace_headers(request: SignedRequest, **changes: str | None) -> SignedRequest:
    headers = dict(request.headers)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return SignedRequest(request.method, request.host, request.path_qs, headers, request.body)


def test_a_correctly_signed_request_identifies_its_caller(keys: KeyStore) -> None:
    identity = verify(signed(), keys, region="us-east-1")
    assert identity.user == "dana"
    assert identity.teams == ("payments",)


def test_a_get_without_body_verifies(keys: KeyStore) -> None:
    request = signed(method="GET", body=b"", url="http://127.0.0.1:8080/api/v1/health")
    assert verify(request, keys, region="us-east-1").user == "dana"


def test_a_tampered_body_is_caught_by_the_signed_payload_hash(keys: KeyStore) -> None:
    request = signed()
    tampered = SignedRequest(
        request.method,
        request.host,
        request.path_qs,
        request.headers,
        BODY.replace(b"web", b"evil"),
    )
    assert rejected(tampered, keys) == errors.AUTH_PAYLOAD_MISMATCH.code


def test_a_tampered_body_without_payload_hash_breaks_the_signature(keys: KeyStore) -> None:
    # Plain botocore signing, as any AWS SDK would do it: no X-Amz-Content-SHA256 header.
    aws = AWSRequest(
        method="POST", url=URL, data=BODY, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(KEY_ID, SECRET), "execute-api", "us-east-1").add_auth(aws)
    parts = urlsplit(URL)
    headers = {k.lower(): v for k, v in aws.headers.items()} | {"host": parts.netloc}
    request = SignedRequest("POST", parts.netloc, f"{parts.path}?{parts.query}", headers, BODY)
    assert verify(request, keys, region="us-east-1").user == "dana"
    tampered = SignedRequest("POST", parts.netloc, request.path_qs, headers, BODY + b" ")
    assert rejected(tampered, keys) == errors.AUTH_SIGNATURE_MISMATCH.code


def test_a_tampered_signed_header_breaks_the_signature(keys: KeyStore) -> None:
    request = replace_headers(signed(), content_type="text/plain")
    assert rejected(request, keys) == errors.AUTH_SIGNATURE_MISMATCH.code


def test_a_signed_header_of_bytes_that_are_not_utf8_is_a_mismatch_not_a_crash(
    keys: KeyStore,
) -> None:
    # The server holds such bytes as surrogate escapes (aiohttp decodes headers so).
    request = replace_headers(signed(), content_type=b"\xfe\xfc".decode("utf-8", "surrogateescape"))
    assert rejected(request, keys) == errors.AUTH_SIGNATURE_MISMATCH.code


def test_a_tampered_query_string_breaks_the_signature(keys: KeyStore) -> None:
    request = signed()
    moved = SignedRequest(
        request.method,
        request.host,
        request.path_qs.replace("failed", "completed"),
        request.headers,
        request.body,
    )
    assert rejected(moved, keys) == errors.AUTH_SIGNATURE_MISMATCH.code


def test_a_wrong_secret_breaks_the_signature(keys: KeyStore) -> None:
    assert rejected(signed(secret="not-the-secret"), keys) == errors.AUTH_SIGNATURE_MISMATCH.code


def refusal(request: SignedRequest, keys: KeyStore) -> tuple[str, str, str]:
    with pytest.raises(PaoError) as caught:
        verify(request, keys, region="us-east-1")
    return caught.value.code.code, caught.value.message, caught.value.suggestion


def test_an_unknown_key_is_answered_exactly_as_a_wrong_signature(keys: KeyStore) -> None:
    unknown = refusal(signed(key_id="PAONOBODY00000000000"), keys)
    assert unknown == refusal(signed(secret="not-the-secret"), keys)
    assert unknown[0] == errors.AUTH_SIGNATURE_MISMATCH.code
    assert "PAONOBODY" not in unknown[1]


def test_a_temporary_key_without_its_token_cannot_be_told_from_an_unknown_key(
    keys: KeyStore,
) -> None:
    # Without the secret, a caller learns nothing about which keys exist or need a token.
    probe = signed(key_id="PAOTEMPKEY0000000001", secret="a-guess")
    assert refusal(probe, keys) == refusal(signed(key_id="PAONOBODY00000000000"), keys)


def test_an_idempotency_key_must_be_signed(keys: KeyStore) -> None:
    request = replace_headers(signed(), idempotency_key="retry-1")
    with pytest.raises(PaoError) as caught:
        verify(request, keys, region="us-east-1")
    assert caught.value.code == errors.AUTH_UNSIGNED_HEADER
    assert caught.value.details[0].field == "idempotency-key"
    assert caught.value.code.http_status == 401


def test_a_signed_idempotency_key_verifies(keys: KeyStore) -> None:
    target = Target("http://127.0.0.1:8080", "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None))
    headers = sign(target, "POST", URL, BODY, {"Idempotency-Key": "retry-1"})
    parts = urlsplit(URL)
    lowered = {k.lower(): v for k, v in headers.items()} | {"host": parts.netloc}
    request = SignedRequest("POST", parts.netloc, f"{parts.path}?{parts.query}", lowered, BODY)
    assert verify(request, keys, region="us-east-1").user == "dana"


def test_a_signed_header_sent_twice_is_refused(keys: KeyStore) -> None:
    request = signed()
    twice = SignedRequest(
        request.method,
        request.host,
        request.path_qs,
        request.headers,
        request.body,
        repeated=frozenset({"content-type"}),
    )
    with pytest.raises(PaoError) as caught:
        verify(twice, keys, region="us-east-1")
    assert caught.value.code == errors.AUTH_DUPLICATE_HEADER
    assert caught.value.details[0].field == "content-type"


def test_the_header_checks_need_neither_body_nor_key(keys: KeyStore) -> None:
    headers = signed().headers
    auth = check_authorization(headers, region="us-east-1")
    assert auth.access_key == KEY_ID
    later = datetime.now(UTC) + timedelta(seconds=90)
    with pytest.raises(PaoError) as caught:
        check_authorization(headers, region="us-east-1", now=later, max_skew=timedelta(seconds=60))
    assert caught.value.code == errors.AUTH_EXPIRED
    assert "limit 60 s" in caught.value.message


def test_an_expired_date_is_refused(keys: KeyStore) -> None:
    later = datetime.now(UTC) + timedelta(minutes=6)
    assert rejected(signed(), keys, now=later) == errors.AUTH_EXPIRED.code


def test_a_date_within_the_skew_is_accepted(keys: KeyStore) -> None:
    slightly_later = datetime.now(UTC) + timedelta(minutes=4)
    assert verify(signed(), keys, region="us-east-1", now=slightly_later).user == "dana"


def test_a_missing_signature_is_refused(keys: KeyStore) -> None:
    assert rejected(replace_headers(signed(), authorization=None), keys) == errors.AUTH_MISSING.code


def test_a_malformed_authorization_header_is_refused(keys: KeyStore) -> None:
    request = replace_headers(signed(), authorization="Basic ZGFuYTpodW50ZXIy")
    assert rejected(request, keys) == errors.AUTH_MALFORMED.code


def test_a_malformed_date_is_refused(keys: KeyStore) -> None:
    request = replace_headers(signed(), x_amz_date="yesterday")
    assert rejected(request, keys) == errors.AUTH_MALFORMED.code


def test_a_signature_for_another_region_is_refused(keys: KeyStore) -> None:
    assert rejected(signed(region="eu-west-1"), keys) == errors.AUTH_SCOPE_MISMATCH.code


def test_temporary_credentials_need_their_session_token(keys: KeyStore) -> None:
    good = signed(key_id="PAOTEMPKEY0000000001", secret="temp-secret", token="the-session-token")
    assert verify(good, keys, region="us-east-1").user == "ci-bot"
    bad = signed(key_id="PAOTEMPKEY0000000001", secret="temp-secret", token="another-token")
    assert rejected(bad, keys) == errors.AUTH_TOKEN_MISMATCH.code
    none = signed(key_id="PAOTEMPKEY0000000001", secret="temp-secret")
    assert rejected(none, keys) == errors.AUTH_TOKEN_MISMATCH.code


def test_each_failure_names_the_field_at_fault(keys: KeyStore) -> None:
    with pytest.raises(PaoError) as caught:
        verify(signed(), keys, region="us-east-1", now=datetime.now(UTC) + timedelta(hours=1))
    assert caught.value.details[0].field == "X-Amz-Date"
    assert caught.value.suggestion


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("https://pao.example.com/api/v1/requests", {}),
        ("https://pao.example.com/api/v1/requests?b=2&a=1&a=0&c", {}),
        ("https://pao.example.com/api/v1/requests?q=a%20b&x=%2F", {}),
        ("https://pao.example.com/api//v1/./catalog/../requests/", {}),
        ("https://pao.example.com/api/v1/catalog/a%20b~c", {}),
        ("https://pao.example.com:8443/api/v1/requests", {"X-Note": "  two   spaces  "}),
        ("https://pao.example.com/api/v1/requests", {"User-Agent": "sdk/1.0", "X-B": "b"}),
    ],
)
def test_any_sdk_signature_verifies_whatever_the_path_query_and_headers(
    keys: KeyStore, url: str, headers: dict[str, str]
) -> None:
    # Signed as botocore signs for any AWS SDK call: the gateway must rebuild the same bytes.
    aws = AWSRequest(method="PUT", url=url, data=BODY, headers=headers)
    SigV4Auth(Credentials(KEY_ID, SECRET), "execute-api", "us-east-1").add_auth(aws)
    parts = urlsplit(url)
    lowered = {k.lower(): v for k, v in aws.headers.items()} | {"host": parts.netloc}
    path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
    request = SignedRequest("PUT", parts.netloc, path_qs, lowered, BODY)
    assert verify(request, keys, region="us-east-1").user == "dana"
    elsewhere = SignedRequest("PUT", parts.netloc, path_qs.replace("api", "apx"), lowered, BODY)
    assert rejected(elsewhere, keys) == errors.AUTH_SIGNATURE_MISMATCH.code


def test_a_header_listed_twice_or_never_signed_by_sdks_changes_nothing(keys: KeyStore) -> None:
    # SignedHeaders is read as a set, and a header no SDK signs (user-agent) is left out of the
    # canonical request, as botocore does: the signature is the one botocore computes.
    request = replace_headers(signed(), user_agent="curl/8")
    auth = request.headers["authorization"]
    listed = auth.split("SignedHeaders=")[1].split(",")[0]
    padded = auth.replace(listed, f"{listed};user-agent;host")
    assert verify(replace_headers(request, authorization=padded), keys, region="us-east-1")


def test_the_same_key_verifies_again_and_a_wrong_secret_still_fails(keys: KeyStore) -> None:
    # The derived key is cached per secret, date, region and service: never shared across secrets.
    assert verify(signed(), keys, region="us-east-1").user == "dana"
    assert verify(signed(), keys, region="us-east-1").user == "dana"
    assert rejected(signed(secret="not-the-secret"), keys) == errors.AUTH_SIGNATURE_MISMATCH.code
