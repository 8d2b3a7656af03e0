"""REST models of sign-in with AWS credentials (`/api/v1/auth/sign-in`).

The caller proves who they are in AWS the way Vault's AWS auth method and the EKS authenticator
let them: they sign an `sts:GetCallerIdentity` call with their own credentials and hand it to
PAO, which sends it to STS, learns the caller's ARN from the answer and maps it to a PAO
identity. The signed call names PAO as its audience in a signed header, so a proof made for
another service cannot be used here, and one made for PAO is accepted once.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

#: The signed header that names the PAO a proof is for.
AUDIENCE_HEADER = "X-PAO-Server-ID"
#: A signed random value that makes each proof unique (two signed in one second would be equal,
#: and the second refused as a replay).
NONCE_HEADER = "X-PAO-Nonce"
#: The one call a proof may be, form-encoded as the STS query API takes it.
GET_CALLER_IDENTITY = "Action=GetCallerIdentity&Version=2011-06-15"


class SignInInfo(BaseModel):
    """`GET /api/v1/auth/sign-in`: what a proof must be signed for."""

    model_config = ConfigDict(frozen=True)

    sts_endpoint_url: str = Field(description="The STS endpoint PAO sends proofs to; sign for it.")
    sts_region: str = Field(description="The region to sign the STS call for.")
    audience_header: str = AUDIENCE_HEADER
    audience: str = Field(description="The value the audience header must carry, signed.")
    body: str = Field(default=GET_CALLER_IDENTITY, description="The exact body to sign.")
    max_age_seconds: int = Field(description="How old a proof may be when PAO receives it.")
    session_seconds: int = Field(description="How long the session key it buys is valid.")


class SignInBody(BaseModel):
    """`POST /api/v1/auth/sign-in`: a signed `sts:GetCallerIdentity` call, not sent yet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    headers: dict[str, str] = Field(
        description="The signed call's headers (Authorization, X-Amz-Date, the audience header, "
        "Content-Type, X-Amz-Security-Token for temporary credentials).",
        max_length=16,
    )
    body: str = Field(
        default=GET_CALLER_IDENTITY, description="The signed call's body.", max_length=256
    )


class SignInSession(BaseModel):
    """A PAO session key: sign what follows with it (SigV4, service execute-api) until
    `expires_at`."""

    model_config = ConfigDict(frozen=True)

    access_key_id: str
    secret_access_key: str
    expires_at: datetime
    user: str
    teams: list[str]
    roles: list[str]
    principal_arn: str = Field(description="The AWS caller STS named.")


class PortalLink(BaseModel):
    """`POST /api/v1/portal/links`: a one-time link that signs a browser in to the portal as
    the caller (`devctl portal`)."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="Open it in the browser; it works once, until `expires_at`.")
    expires_at: datetime
    user: str = Field(description="Who the browser session will act as.")
