"""Settings for every PAO process, read from `PAO_*` environment variables."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: libpq's sslmode values, weakest first.
SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
#: The modes that refuse a connection without TLS.
TLS_SSL_MODES = ("require", "verify-ca", "verify-full")


class Settings(BaseSettings):
    """One place for configuration; each field maps to `PAO_<FIELD>`."""

    # hide_input_in_errors: a refused setting's error must not echo the environment, which
    # holds passwords and tokens (a DSN, PAO_JIRA_TOKEN, ...).
    model_config = SettingsConfigDict(env_prefix="PAO_", extra="ignore", hide_input_in_errors=True)

    database_url: str | None = Field(
        default=None, description="PostgreSQL DSN; unset means `pao up` starts an embedded server."
    )
    database_read_url: str | None = Field(
        default=None,
        description="PostgreSQL DSN of a read replica (Aurora's reader endpoint) serving the "
        "gateway's list, search and figure queries; unset: everything reads the writer.",
    )
    database_sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = (
        Field(
            default=None,
            description="TLS to PostgreSQL, as libpq's sslmode (verify-full: the certificate must "
            "be signed by PAO_DATABASE_SSLROOTCERT and name the host); unset: the DSN's sslmode, "
            "else prefer (Terraform's state: disable).",
        )
    )
    database_sslrootcert: Path | None = Field(
        default=None,
        description="PEM file of the CAs that sign PostgreSQL's certificate (the RDS CA bundle) "
        "for sslmode verify-ca and verify-full; unset: the system's trust store.",
    )
    database_iam_auth: bool = Field(
        default=False,
        description="Log in to PostgreSQL with RDS IAM authentication tokens (made from the "
        "process's AWS credentials, renewed every 10 minutes) instead of a password; needs "
        "sslmode require, verify-ca or verify-full.",
    )
    database_iam_region: str | None = Field(
        default=None, description="Region of the database for IAM tokens; unset: aws_region."
    )
    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset means `pao up` starts tansu."
    )
    kafka_enable_idempotence: bool = Field(
        default=True, description="Idempotent producer; on for Apache Kafka, off for tansu."
    )
    kafka_commit_offsets: bool = Field(
        default=True,
        description="Also commit consumers' offsets (kept in PostgreSQL) to their Kafka groups, "
        "for lag tools and KEDA's kafka scaler; PAO itself never reads them.",
    )
    kafka_partitions: int = Field(default=3, ge=1, description="Partitions for topics PAO creates.")
    kafka_replication_factor: int = Field(
        default=1, ge=1, description="Replicas for topics PAO creates (3 on a production Kafka)."
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=20, ge=1, description="Longest a fetch waits for records (tansu: keep it short)."
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="A consumer silent this long leaves its group; its partitions move.",
    )
    kafka_heartbeat_interval_ms: int = Field(
        default=1_000, ge=100, description="How often a consumer tells its group it is alive."
    )
    kafka_rebalance_timeout_ms: int = Field(
        default=30_000,
        ge=1_000,
        description="How long the group waits for members to rejoin during a rebalance.",
    )

    http_host: str = Field(default="127.0.0.1", description="Address the gateway binds.")
    http_port: int = Field(default=8080, ge=0, le=65535)
    http_reuse_port: bool = Field(
        default=False,
        description="Let several gateway processes on one host share the port (SO_REUSEPORT): "
        "the kernel spreads connections over them. Off, a second gateway on a taken port fails.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port serving GET /metrics for a process without the gateway; unset: off.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics port binds.")
    max_body_bytes: int = Field(default=1_048_576, ge=1_024, description="Largest accepted body.")
    log_follows_per_user: int = Field(
        default=4, ge=1, description="Log streams (logs?follow=true) one user may hold open."
    )
    log_follows_total: int = Field(
        default=200, ge=1, description="Log streams one gateway holds open for all users."
    )
    log_follow_max_seconds: float = Field(
        default=3600.0, gt=0, description="A log stream ends after this long; clients reconnect."
    )

    data_dir: Path = Field(default=Path(".pao"), description="Local state of `pao up`.")

    auth_mode: Literal["sigv4", "apigateway", "none"] = Field(default="sigv4")
    region: str = Field(default="us-east-1", description="SigV4 region the gateway expects.")
    keys_file: Path | None = Field(default=None, description="YAML key store for SigV4.")
    clock_skew_seconds: int = Field(default=300, ge=1)
    apigateway_identity_header: str = Field(default="x-pao-caller-arn")
    apigateway_secret_header: str = Field(default="x-pao-apigateway-secret")
    apigateway_secret: str | None = Field(
        default=None, description="Value API Gateway adds to each request it forwards."
    )
    sts_endpoint_url: str | None = Field(
        default=None,
        description="STS endpoint sign-in proofs are sent to; unset: aws_endpoint_url, else "
        "https://sts.<aws_region>.amazonaws.com.",
    )
    signin_audience: str | None = Field(
        default=None,
        description="What a sign-in proof's X-PAO-Server-ID must say; unset: the Host the "
        "gateway is called on.",
    )
    signin_max_age_seconds: int = Field(
        default=300, ge=5, le=900, description="How old a sign-in proof may be."
    )
    session_ttl_seconds: int = Field(
        default=3600, ge=1, le=43_200, description="How long a signed-in session key is valid."
    )
    portal_link_seconds: int = Field(
        default=60, ge=1, le=600, description="How long a `devctl portal` sign-in link works."
    )
    portal_session_seconds: int = Field(
        default=28_800,
        ge=60,
        le=604_800,
        description="How long a portal browser session lasts after signing in with a link.",
    )
    session_key_file: Path | None = Field(
        default=None,
        description="Key session secrets are derived from (32 random bytes, made when missing); "
        "unset: <data_dir>/session-signing.key. Every gateway of an installation needs the same.",
    )

    catalog_dir: Path = Field(default=Path("catalog"), description="Local catalog directory.")
    catalog_git_url: str | None = Field(default=None, description="Git catalog; overrides the dir.")
    catalog_git_ref: str = Field(default="main", description="Branch or tag of the git catalog.")
    catalog_git_path: str = Field(default="", description="Catalog folder within the repository.")
    catalog_git_token: str | None = Field(
        default=None, description="HTTPS token for the git catalog."
    )
    catalog_refresh_on_start: bool = Field(default=True)
    github_webhook_secret: str | None = Field(default=None, description="Shared webhook secret.")
    github_webhook_secret_path: str | None = Field(
        default="/pao/github/webhook-secret",
        description="Secret path of the webhook secret, read when github_webhook_secret is unset.",
    )

    secrets_provider: Literal["env", "file", "ssm"] = Field(
        default="env", description="Where secrets come from: env vars, a YAML file, or AWS SSM."
    )
    secrets_file: Path | None = Field(default=None, description="YAML path -> value (file).")
    secrets_cache_seconds: float = Field(default=60.0, ge=0)
    aws_region: str = Field(default="us-east-1", description="Region of AWS services (SSM).")
    aws_endpoint_url: str | None = Field(
        default=None,
        description="One endpoint for every AWS API PAO calls (SSM, STS, what REST actions sign "
        "for), e.g. a moto server; unset: each service's standard endpoint.",
    )
    aws_mode: Literal["embedded", "real"] = Field(
        default="embedded",
        description="`pao up` without aws_endpoint_url: start moto (embedded) or use real AWS.",
    )
    rest_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts REST actions may call where the environment names none: comma-separated "
        "patterns (api.example.com, *.example.com, host:8443, 127.0.0.1:*); empty: none.",
    )
    catalog_git_token_secret: str | None = Field(
        default="/pao/github/token", description="Secret path of the git catalog's HTTPS token."
    )
    platform_name: str = Field(default="PAO", description="system.platform_name in templates.")
    public_url: str | None = Field(default=None, description="system.gateway_url in templates.")
    jira_url: str | None = Field(default=None, description="JIRA base URL (system.jira_url).")
    environments_file: Path | None = Field(
        default=None, description="YAML: settings per target environment (the env scope)."
    )
    default_environment: str = Field(default="dev")

    jira_username: str | None = Field(default=None, description="JIRA user (basic auth).")
    jira_token: str | None = Field(default=None, description="JIRA API token or password.")
    jira_token_secret: str | None = Field(
        default="/pao/jira/api-token", description="Secret path of the token."
    )
    jira_poll_seconds: float | None = Field(
        default=None, description="Poll every JIRA issue this often (overrides the items')."
    )
    jira_default_poll_seconds: float = Field(default=60.0, gt=0)
    jira_correlation_field: str | None = Field(
        default="customfield_10200", description="JIRA custom field holding the correlation id."
    )
    fulfillment_concurrency: int = Field(default=8, ge=1, le=256)
    breaker_threshold: int = Field(default=5, ge=1, description="Failures that open a breaker.")
    breaker_seconds: float = Field(default=30.0, gt=0, description="How long a breaker stays open.")
    terraform_binary: str = Field(default="terraform")
    terraform_state_url: str | None = Field(
        default=None,
        description="PostgreSQL DSN of Terraform's state (pg backend); modules can read it, so "
        "give it a role that owns only the terraform_* schemas. Unset: the database URL.",
    )
    terraform_state_roles: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="A PostgreSQL role per Terraform workspace, allowed only its own state "
        "(auto: when the state login may create roles; on: refuse to run Terraform otherwise).",
    )
    terraform_passthrough_env: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated names of worker environment variables Terraform and its "
        "modules also get (e.g. PGPASSWORD, HTTPS_PROXY); none by default.",
    )
    notifications_file: Path | None = Field(default=None, description="Notification routing YAML.")
    notification_stale_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A notice left 'sending' this long (its sender died) is marked 'unknown'.",
    )

    relay_name: str = Field(default="main", description="Checkpoint and leader-lock name.")
    relay_batch_size: int = Field(default=2_000, ge=1)
    relay_poll_interval_ms: int = Field(default=10, ge=1)

    log_level: str = Field(default="info")
    log_format: Literal["auto", "json", "console"] = Field(default="auto")

    db_pool_min: int = Field(default=1, ge=1, description="Connections a process keeps open.")
    db_pool_max: int = Field(
        default=6,
        ge=2,
        description="Most connections a process opens (a dozen processes fit max_connections 100).",
    )
    db_idle_in_transaction_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description="PostgreSQL ends a session idle inside a transaction this long (a frozen "
        "process), releasing its locks; 0: never.",
    )
    retry_cooldown_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Least time between two retries of one request (429 with Retry-After).",
    )
    escalate_cooldown_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Least time between two escalations of one request (429 with Retry-After).",
    )
    resource_expiry_notice_seconds: float = Field(
        default=86_400.0,
        ge=0,
        description="How long before a resource expires its owner is told (ResourceExpiring).",
    )
    resource_expiry_check_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often expired resources are looked for and decommissioned.",
    )
    fulfillment_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A job held by a worker that stops renewing it this long is taken over.",
    )
    fulfillment_park_limit_seconds: float = Field(
        default=600.0,
        gt=0,
        description="An automated action whose system stays out (breaker open) this long after "
        "it was dispatched fails for good; its item's manual fallback then takes over.",
    )

    @field_validator("database_sslmode", mode="before")
    @classmethod
    def _known_sslmode(cls, value: object) -> object:
        if value in ("", None):
            return None
        if value not in SSL_MODES:
            raise ValueError(
                f"PAO_DATABASE_SSLMODE={value!r} is not a sslmode PAO knows; choose one of "
                f"{', '.join(SSL_MODES)} (verify-full for Aurora)"
            )
        return value

    @field_validator("database_sslrootcert", mode="after")
    @classmethod
    def _readable_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            raise ValueError(
                f"PAO_DATABASE_SSLROOTCERT={value}: no such file; download the RDS CA bundle "
                "(https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem) and name it"
            )
        try:
            ssl.create_default_context(cafile=str(value))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"PAO_DATABASE_SSLROOTCERT={value} holds no PEM CA certificate PAO can read "
                f"({type(exc).__name__}); it should be the RDS CA bundle"
            ) from None
        return value

    @model_validator(mode="after")
    def _iam_over_tls(self) -> Self:
        if self.database_iam_auth and self.database_sslmode not in TLS_SSL_MODES:
            raise ValueError(
                "PAO_DATABASE_IAM_AUTH=true sends a token as the password, which RDS accepts only "
                "over TLS: set PAO_DATABASE_SSLMODE=verify-full (and PAO_DATABASE_SSLROOTCERT to "
                f"the RDS CA bundle); it is {self.database_sslmode or 'unset'}"
            )
        return self

    @field_validator("rest_allowed_hosts", "terraform_passthrough_env", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def catalog_root(self) -> Path:
        """The local folder holding the catalog's files: the directory, or the git checkout."""
        if self.catalog_git_url:
            checkout = self.data_dir.resolve() / "catalog-git"
            subpath = self.catalog_git_path.strip("/")
            return checkout / subpath if subpath else checkout
        return self.catalog_dir.resolve()

    @property
    def sts_endpoint(self) -> str:
        """Where sign-in proofs go: the setting, the one AWS endpoint, or the region's STS."""
        return (
            self.sts_endpoint_url
            or self.aws_endpoint_url
            or f"https://sts.{self.aws_region}.amazonaws.com"
        ).rstrip("/")
