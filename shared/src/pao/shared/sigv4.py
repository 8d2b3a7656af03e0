"""AWS SigV4 verification, as API Gateway does it for `execute-api`.

The canonical request is rebuilt from the headers the client says it signed, the signature
recomputed with the secret from the key store and compared in constant time. The canonical
request is built here, as botocore's SigV4Auth builds it (the tests check the two agree), rather
than through a botocore AWSRequest: that object, its header map and the four-HMAC key derivation
cost more than the rest of a submit's checks. The derived signing key depends only on the secret,
the date, the region and the service, so it is kept per day.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST
from botocore.utils import normalize_url_path

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.shared.keystore import Identity, KeyStore

SERVICE = "execute-api"
ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})\s*$"
)


#: Headers a SigV4 signer leaves out of the canonical request even when listed as signed.
_NEVER_SIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
#: The secret an unknown access key is checked with: a fixed one, so that its signing key is
#: cached like a known key's and the work (and time) is the same.
_UNKNOWN_KEY_SECRET = secrets.token_hex(20)

#: Headers the gateway acts on: when sent, they must be signed, or a relay could add them.
MUST_BE_SIGNED = ("idempotency-key",)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the verifier needs from an HTTP request, independent of the web framework."""

    method: str
    host: str
    path_qs: str  # the raw path and query string, as sent
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    repeated: frozenset[str] = frozenset()  # lower-cased names of headers sent more than once


@dataclass(frozen=True, slots=True)
class Authorization:
    """A SigV4 Authorization header that passed every check that needs no body and no key."""

    access_key: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str


def _fail(code: errors.ErrorCode, message: str, field: str = "Authorization") -> PaoError:
    return PaoError(code, message, details=[ErrorDetail(field=field, message=message)])


def check_authorization(
    headers: Mapping[str, str],
    *,
    region: str,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
) -> Authorization:
    """The parsed Authorization header if it is present, well-formed, in scope and on time.

    Cheap and body-free, so the gateway runs it before reading a body from an unknown caller.
    """
    header = headers.get("authorization")
    if not header:
        raise _fail(errors.AUTH_MISSING, "the request has no Authorization header")
    match = _AUTH_RE.match(header.strip())
    if not match:
        raise _fail(errors.AUTH_MALFORMED, "the Authorization header is not a SigV4 header")
    try:
        access_key, scope_date, scope_region, scope_service, terminator = match["credential"].split(
            "/"
        )
    except ValueError:
        raise _fail(
            errors.AUTH_MALFORMED,
            "the credential scope is not key/date/region/service/aws4_request",
        ) from None
    signed_headers = tuple(match["signed"].split(";"))
    if "host" not in signed_headers or terminator != "aws4_request":
        raise _fail(errors.AUTH_MALFORMED, "the host header must be signed")

    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = _parse_amz_date(amz_date)
    except ValueError:
        raise _fail(
            errors.AUTH_MALFORMED,
            "X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ",
            field="X-Amz-Date",
        ) from None
    if "x-amz-date" not in signed_headers:
        raise _fail(errors.AUTH_MALFORMED, "X-Amz-Date must be signed", field="X-Amz-Date")
    skew = abs((now or datetime.now(UTC)) - signed_at)
    if skew > max_skew:
        raise _fail(
            errors.AUTH_EXPIRED,
            f"the request was signed {int(skew.total_seconds())} s "
            f"away from the server's time (limit {int(max_skew.total_seconds())} s)",
            field="X-Amz-Date",
        )
    if scope_date != amz_date[:8] or scope_service != SERVICE or scope_region != region:
        raise _fail(
            errors.AUTH_SCOPE_MISMATCH,
            f"signed for {scope_region}/{scope_service} on "
            f"{scope_date}; this gateway expects {region}/{SERVICE} on {amz_date[:8]}",
        )
    return Authorization(access_key, signed_headers, match["signature"], amz_date)


def verify(
    request: SignedRequest,
    keys: KeyStore,
    *,
    region: str,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
    authorization: Authorization | None = None,
) -> Identity:
    """The caller's identity if the request carries a valid signature; otherwise a PaoError.

    `authorization`, from `check_authorization` on the same headers, skips those checks again.
    """
    auth = authorization or check_authorization(
        request.headers, region=region, now=now, max_skew=max_skew
    )
    signed_headers = list(auth.signed_headers)

    repeated = sorted(request.repeated.intersection(signed_headers))
    if repeated:
        raise _fail(
            errors.AUTH_DUPLICATE_HEADER,
            f"signed header(s) sent more than once: {', '.join(repeated)}",
            field=repeated[0],
        )
    unsigned = [h for h in MUST_BE_SIGNED if h in request.headers and h not in signed_headers]
    if unsigned:
        raise _fail(
            errors.AUTH_UNSIGNED_HEADER,
            f"header(s) sent but not signed: {', '.join(unsigned)}; list them in SignedHeaders",
            field=unsigned[0],
        )
    missing = [h for h in signed_headers if h not in request.headers]
    if missing:
        raise _fail(errors.AUTH_MALFORMED, f"signed header(s) not sent: {', '.join(missing)}")

    declared_hash = request.headers.get("x-amz-content-sha256")
    if declared_hash is not None and not hmac.compare_digest(
        declared_hash, hashlib.sha256(request.body).hexdigest()
    ):
        raise _fail(
            errors.AUTH_PAYLOAD_MISMATCH,
            "the body's SHA-256 differs from the signed X-Amz-Content-SHA256",
            field="body",
        )

    # An unknown key is answered as a wrong signature, after the same work, so that the answer
    # does not tell which access key ids exist.
    entry = keys.get(auth.access_key)
    secret = entry.secret_access_key.get_secret_value() if entry else _UNKNOWN_KEY_SECRET
    expected = _signature(request, signed_headers, auth.amz_date, secret, region)
    if not hmac.compare_digest(expected, auth.signature) or entry is None:
        raise _fail(errors.AUTH_SIGNATURE_MISMATCH, "the signature does not match the request")

    token = request.headers.get("x-amz-security-token")
    expected_token = entry.session_token.get_secret_value() if entry.session_token else None
    if expected_token is not None and (
        token is None
        or "x-amz-security-token" not in signed_headers
        or not hmac.compare_digest(token, expected_token)
    ):
        raise _fail(
            errors.AUTH_TOKEN_MISMATCH,
            "the session token is missing or wrong",
            field="X-Amz-Security-Token",
        )
    if expected_token is None and token is not None:
        raise _fail(
            errors.AUTH_TOKEN_MISMATCH,
            "these credentials take no session token",
            field="X-Amz-Security-Token",
        )
    return entry.identity()


def _parse_amz_date(value: str) -> datetime:
    """YYYYMMDDTHHMMSSZ as an aware datetime (strptime is slow on the hot path)."""
    if (
        len(value) != 16
        or value[8] != "T"
        or value[15] != "Z"
        or not (value[:8].isdigit() and value[9:15].isdigit())
    ):
        raise ValueError(value)
    return datetime(
        int(value[0:4]),
        int(value[4:6]),
        int(value[6:8]),
        int(value[9:11]),
        int(value[11:13]),
        int(value[13:15]),
        tzinfo=UTC,
    )


def _signature(
    request: SignedRequest,
    signed_headers: list[str],
    amz_date: str,
    secret: str,
    region: str,
) -> str:
    url = urlsplit(f"https://{request.host}{request.path_qs}")
    names = sorted({name for name in signed_headers if name not in _NEVER_SIGNED})
    headers = "".join(f"{name}:{' '.join(request.headers[name].split())}\n" for name in names)
    payload_hash = (
        request.headers["x-amz-content-sha256"]
        if "x-amz-content-sha256" in names
        else hashlib.sha256(request.body).hexdigest()
    )
    canonical = "\n".join(
        (
            request.method.upper(),
            quote(normalize_url_path(url.path), safe="/~"),
            _canonical_query(url.query),
            headers,
            ";".join(names),
            payload_hash,
        )
    )
    scope = f"{amz_date[:8]}/{region}/{SERVICE}/aws4_request"
    string_to_sign = "\n".join(
        # A header the server decoded from bytes that are not UTF-8 holds them as surrogate
        # escapes: hash the bytes as they came (such a signature then simply does not match).
        (
            ALGORITHM,
            amz_date,
            scope,
            hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest(),
        )
    )
    key = _signing_key(secret, amz_date[:8], region, SERVICE)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _canonical_query(query: str) -> str:
    """The query string's pairs sorted by name then value, as sent (botocore does not re-encode
    a query it reads from the URL)."""
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{name}={value}" for name, value in pairs)


@functools.lru_cache(maxsize=1024)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
