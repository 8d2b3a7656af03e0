"""The error-code registry (`PAO-<AREA>-<NNN>`) and the error envelope every API failure uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One registered error: its code, HTTP status, short title and default suggestion."""

    code: str
    http_status: int
    title: str
    suggestion: str


REGISTRY: dict[str, ErrorCode] = {}


def _register(code: str, http_status: int, title: str, suggestion: str) -> ErrorCode:
    if code in REGISTRY:
        raise ValueError(f"error code {code} registered twice")
    entry = ErrorCode(code, http_status, title, suggestion)
    REGISTRY[code] = entry
    return entry


# API: the shape of an HTTP request.
ROUTE_NOT_FOUND = _register(
    "PAO-API-001",
    404,
    "No such endpoint",
    "Check the path and the API version prefix /api/v1; `devctl --help` lists commands.",
)
METHOD_NOT_ALLOWED = _register(
    "PAO-API-002",
    405,
    "Method not allowed",
    "Use one of the methods named in the Allow header.",
)
BODY_TOO_LARGE = _register(
    "PAO-API-003",
    413,
    "Request body too large",
    "Send a smaller body; the limit is in the message.",
)
MALFORMED_BODY = _register(
    "PAO-API-004",
    400,
    "Malformed request body",
    "Send a JSON object with Content-Type: application/json.",
)
UNSUPPORTED_MEDIA_TYPE = _register(
    "PAO-API-005",
    415,
    "Unsupported media type",
    "Send Content-Type: application/json.",
)
INVALID_INPUT = _register(
    "PAO-API-006",
    422,
    "Invalid input",
    "Fix the fields listed in details and send the request again.",
)
NOT_FOUND = _register(
    "PAO-API-007",
    404,
    "Resource not found",
    "Check the identifier; list resources to find the right one.",
)

# AUTH: SigV4 verification and authorisation.
AUTH_MISSING = _register(
    "PAO-AUTH-001",
    401,
    "Request is not signed",
    "Sign requests with AWS SigV4 (service execute-api); `devctl` does this for you.",
)
AUTH_MALFORMED = _register(
    "PAO-AUTH-002",
    401,
    "Malformed SigV4 authorization",
    "Send an Authorization header of the form "
    "'AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...' and an X-Amz-Date header.",
)
AUTH_EXPIRED = _register(
    "PAO-AUTH-003",
    401,
    "Request time outside the allowed clock skew",
    "Sign each request when sending it and keep the clock in sync (NTP); the message gives the "
    "allowed skew (PAO_CLOCK_SKEW_SECONDS).",
)
AUTH_SIGNATURE_MISMATCH = _register(
    "PAO-AUTH-005",
    403,
    "Signature does not match",
    "Check the access key id and secret key (an unknown key is answered the same way), and that "
    "no signed header was changed after signing; `pao up` writes a local key.",
)
AUTH_PAYLOAD_MISMATCH = _register(
    "PAO-AUTH-006",
    403,
    "Body does not match the signed payload hash",
    "Do not modify the body after signing; sign the exact bytes sent.",
)
AUTH_SCOPE_MISMATCH = _register(
    "PAO-AUTH-007",
    403,
    "Credential scope does not match this gateway",
    "Sign for service 'execute-api' and this gateway's region (see `devctl --region`).",
)
AUTH_TOKEN_MISMATCH = _register(
    "PAO-AUTH-008",
    403,
    "Session token missing or invalid",
    "Send the X-Amz-Security-Token that belongs to these temporary credentials.",
)
AUTH_UNTRUSTED_FORWARD = _register(
    "PAO-AUTH-009",
    401,
    "Forwarded identity missing or not trusted",
    "Call PAO through the configured AWS API Gateway, which forwards the caller identity.",
)
FORBIDDEN = _register(
    "PAO-AUTH-010",
    403,
    "Not allowed",
    "Ask an admin or a member of the owning team to act, or to grant access.",
)
AUTH_UNKNOWN_PRINCIPAL = _register(
    "PAO-AUTH-011",
    403,
    "Caller is not mapped to a PAO identity",
    "Ask the platform team to map your AWS account and role (or IAM user) under `principals` "
    "in the key store (see deploy/keys.example.yaml).",
)
AUTH_DUPLICATE_HEADER = _register(
    "PAO-AUTH-012",
    400,
    "Authentication header sent more than once",
    "Send each signed header, and the forwarded identity and secret headers, exactly once.",
)
AUTH_UNSIGNED_HEADER = _register(
    "PAO-AUTH-013",
    401,
    "Header must be signed",
    "List the header named in details in SignedHeaders; `devctl` signs every header it sends.",
)
AUTH_SIGNIN_MALFORMED = _register(
    "PAO-AUTH-014",
    400,
    "Sign-in proof is not a signed GetCallerIdentity call for this PAO",
    "Sign in with `devctl login`: it signs sts:GetCallerIdentity for the STS endpoint and the "
    "audience that GET /api/v1/auth/sign-in names.",
)
AUTH_SIGNIN_EXPIRED = _register(
    "PAO-AUTH-015",
    401,
    "Sign-in proof expired",
    "Make a new proof and send it at once (`devctl login`); keep the clock in sync (NTP).",
)
AUTH_SIGNIN_REPLAYED = _register(
    "PAO-AUTH-016",
    401,
    "Sign-in proof already used",
    "Each proof signs in once; make a new one (`devctl login`).",
)
AUTH_SIGNIN_REFUSED = _register(
    "PAO-AUTH-017",
    403,
    "STS refused the sign-in proof",
    "The proof was changed after signing, or its AWS credentials are wrong or expired; check "
    "them with `aws sts get-caller-identity` and sign in again.",
)
AUTH_SESSION_EXPIRED = _register(
    "PAO-AUTH-018",
    401,
    "PAO session expired",
    "Sign in again with `devctl login` (devctl does it by itself for a profile with sign_in).",
)
AUTH_PORTAL_LINK_INVALID = _register(
    "PAO-AUTH-019",
    401,
    "Portal sign-in link expired or already used",
    "A link signs in once, within a minute of being made; run `devctl portal` for a new one.",
)
AUTH_PORTAL_SESSION_MISSING = _register(
    "PAO-AUTH-020",
    401,
    "No portal session",
    "Sign in to the portal with `devctl portal`, which opens a one-time link in the browser.",
)
AUTH_CSRF_MISSING = _register(
    "PAO-AUTH-021",
    403,
    "The portal form's CSRF token is missing or wrong",
    "Reload the page and send the form again; a form made for another session cannot be sent.",
)
AUTH_PORTAL_LINK_SESSION = _register(
    "PAO-AUTH-022",
    403,
    "A portal link needs a signed call",
    "Run `devctl portal`: a link is made for a caller whose request is signed, not from a "
    "browser session.",
)

# SYS: the platform itself.
INTERNAL = _register(
    "PAO-SYS-001",
    500,
    "Internal error",
    "Retry later; if it persists, report the correlation id to the platform team.",
)
DEPENDENCY_UNAVAILABLE = _register(
    "PAO-SYS-002",
    503,
    "A dependency is unavailable",
    "Retry later; `devctl health ready` shows which component is down.",
)

# STORE: the event store.
CONCURRENCY_CONFLICT = _register(
    "PAO-STORE-001",
    409,
    "Concurrent modification",
    "Someone changed this at the same time; read it again and retry.",
)

# CAT: the catalog.
ITEM_NOT_FOUND = _register(
    "PAO-CAT-001",
    404,
    "No such catalog item",
    "List the catalog with `devctl catalog list`.",
)
CATALOG_INVALID = _register(
    "PAO-CAT-002",
    422,
    "The catalog source has problems; the last good catalog stays served",
    "Fix the files listed in details (`catalog/scripts/validate-all.sh` finds them offline).",
)
CATALOG_SOURCE_UNAVAILABLE = _register(
    "PAO-CAT-003",
    502,
    "The catalog source could not be read",
    "Check the catalog repository URL, ref and credentials, then refresh again.",
)
CATALOG_NOT_LOADED = _register(
    "PAO-CAT-004",
    503,
    "No catalog is loaded yet",
    "Refresh the catalog (`devctl catalog refresh`) once its source is valid.",
)
WEBHOOK_SIGNATURE_INVALID = _register(
    "PAO-CAT-005",
    401,
    "Webhook signature missing or invalid",
    "Configure the same secret in GitHub and in PAO_GITHUB_WEBHOOK_SECRET.",
)
WEBHOOK_NOT_CONFIGURED = _register(
    "PAO-CAT-006",
    404,
    "GitHub webhook not configured",
    "Set PAO_GITHUB_WEBHOOK_SECRET, or store the secret at PAO_GITHUB_WEBHOOK_SECRET_PATH "
    "(`pao secrets init`), to accept GitHub webhooks.",
)
MODE_NOT_OFFERED = _register(
    "PAO-CAT-007",
    400,
    "The item does not offer this fulfilment mode",
    "Choose one of the modes named in the suggestion (`devctl catalog get ITEM` lists them).",
)
INVALID_QUERY = _register(
    "PAO-API-008",
    422,
    "Invalid query parameter",
    "Fix the parameter named in details.",
)

# REQ: requests.
REQUEST_NOT_FOUND = _register(
    "PAO-REQ-001",
    404,
    "No such request",
    "List your requests with `devctl request list`.",
)
REQUEST_STATE_CONFLICT = _register(
    "PAO-REQ-002",
    409,
    "The request's state does not allow this",
    "Check the request's status with `devctl request status ID`.",
)
IDEMPOTENCY_KEY_REUSED = _register(
    "PAO-REQ-003",
    422,
    "Idempotency-Key already used for a different request",
    "Use a new Idempotency-Key for a different request body.",
)

NOT_AN_APPROVER = _register(
    "PAO-REQ-004",
    403,
    "You may not decide this approval",
    "Only the approvers the item's policy names decide, and never the requester; "
    "`devctl approvals list` shows what waits for you.",
)
NO_PLAN = _register(
    "PAO-REQ-005",
    404,
    "The request has no Terraform plan",
    "Only Terraform actions plan; `devctl request get ID` shows the request's actions.",
)
REQUEST_TOO_SOON = _register(
    "PAO-REQ-006",
    429,
    "Too soon after the request's last retry or escalation",
    "Wait the seconds given in Retry-After (and in details) before retrying or escalating "
    "this request again.",
)
TOO_MANY_LOG_FOLLOWS = _register(
    "PAO-REQ-007",
    429,
    "Too many log streams open",
    "Close a log stream you follow (devctl request logs --follow) or wait the seconds given "
    "in Retry-After; without follow=true the log is read at once.",
)

# RES: resources (what requests made).
RESOURCE_NOT_FOUND = _register(
    "PAO-RES-001",
    404,
    "No such resource",
    "List your resources with `devctl resource list`.",
)
RESOURCE_STATE_CONFLICT = _register(
    "PAO-RES-002",
    409,
    "The resource's state does not allow this",
    "Check the resource with `devctl resource get ID`; wait for its current request to end.",
)

# VAL: validating items, requests and templates.
INVALID_ITEM_FILE = _register(
    "PAO-VAL-001",
    422,
    "Not a valid catalog item",
    "Run `devctl validate catalog-item FILE` to see every problem.",
)
NO_SUCH_EXAMPLE = _register(
    "PAO-VAL-002",
    422,
    "The form has no such example",
    "Pass an existing example or --inputs FILE.",
)
RENDER_FAILED = _register(
    "PAO-VAL-003",
    422,
    "A template could not be rendered",
    "Check the inputs against the form, and the template named in details.",
)

# CLI: failures the client detects itself.
GATEWAY_UNREACHABLE = _register(
    "PAO-CLI-001",
    0,
    "PAO gateway unreachable",
    "Check --endpoint (or PAO_ENDPOINT) and that PAO runs (`make up` starts it locally).",
)
NO_CREDENTIALS = _register(
    "PAO-CLI-002",
    0,
    "No credentials to sign with",
    "Run `pao up` (writes a local profile), pass --profile, or configure AWS credentials.",
)
BAD_INVOCATION = _register(
    "PAO-CLI-004",
    0,
    "Invalid command input",
    "Check the options and files given; `devctl COMMAND --help` shows them.",
)
WAIT_TIMED_OUT = _register(
    "PAO-CLI-005",
    0,
    "Gave up waiting",
    "The request goes on; follow it with `devctl request status ID --watch`.",
)
BAD_RESPONSE = _register(
    "PAO-CLI-003",
    0,
    "Unexpected response from the gateway",
    "Check that --endpoint points at a PAO gateway; rerun with --verbose for details.",
)


def lookup(code: str) -> ErrorCode:
    """The registered entry for a code; unknown codes map to the internal error."""
    return REGISTRY.get(code, INTERNAL)


class ErrorDetail(BaseModel):
    """One problem: the field at fault (a JSON pointer or name) and what is wrong with it."""

    model_config = ConfigDict(frozen=True)

    field: str | None = None
    message: str
    line: int | None = None
    column: int | None = None


class ErrorBody(BaseModel):
    """The body of the error envelope."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    details: list[ErrorDetail] = []
    suggestion: str
    correlation_id: str | None = None


class ErrorResponse(BaseModel):
    """`{"error": {...}}`: what every failing API call returns."""

    model_config = ConfigDict(frozen=True)

    error: ErrorBody


class PaoError(Exception):
    """An error with a registered code; the gateway turns it into the error envelope."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        details: list[ErrorDetail] | None = None,
        suggestion: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.title
        self.details = details or []
        self.suggestion = suggestion or code.suggestion
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(f"{code.code}: {self.message}")

    def body(self, correlation_id: str | None) -> ErrorResponse:
        """The error envelope for this error."""
        return ErrorResponse(
            error=ErrorBody(
                code=self.code.code,
                message=self.message,
                details=self.details,
                suggestion=self.suggestion,
                correlation_id=correlation_id,
            )
        )


def markdown_table() -> str:
    """The registry as the Markdown table in docs/api.md (`python -m pao.contracts.errors`)."""
    lines = ["| code | HTTP | meaning | suggestion |", "|---|---|---|---|"]
    for entry in REGISTRY.values():
        status = entry.http_status or "(client)"
        lines.append(f"| `{entry.code}` | {status} | {entry.title} | {entry.suggestion} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")  # noqa: T201
