-- The portal's one-time sign-in links and browser sessions (pao.gateway.portal.auth). Only the
-- SHA-256 digest of a link's or a session's token is stored: the table cannot sign anyone in.
-- A link is used at most once (used_at), within its short life; a session lasts until it ends
-- or its holder signs out.
CREATE TABLE portal_links (
    digest      bytea       PRIMARY KEY,
    identity    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX portal_links_expiry ON portal_links (expires_at);

CREATE TABLE portal_sessions (
    digest      bytea       PRIMARY KEY,
    identity    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);
