-- Sign-in with AWS credentials (pao.gateway.signin). A session holds who signed in and until
-- when; its secret is derived from the installation's session key and never stored. A proof is
-- remembered by the digest of its signature until it could no longer be accepted anyway.
CREATE TABLE auth_sessions (
    access_key_id  text        PRIMARY KEY,
    identity       jsonb       NOT NULL,
    principal_arn  text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX auth_sessions_expiry ON auth_sessions (expires_at);

CREATE TABLE auth_signin_proofs (
    digest      text        PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX auth_signin_proofs_expiry ON auth_signin_proofs (expires_at);
