-- Read models of requests (rebuildable from the event store at any time), and submit idempotency.

-- One row per request: columns for what queries filter and sort on, JSONB for the rest.
CREATE TABLE requests (
    request_id       text PRIMARY KEY,
    item_id          text        NOT NULL,
    item_version     text        NOT NULL,
    item_name        text        NOT NULL,
    owner_team       text        NOT NULL,
    requester        text        NOT NULL,
    requester_teams  text[]      NOT NULL DEFAULT '{}',
    environment      text        NOT NULL,
    status           text        NOT NULL,
    escalation_level integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    correlation_id   text,
    last_error       text,
    stream_version   integer     NOT NULL,
    inputs           jsonb       NOT NULL,
    details          jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX requests_requester ON requests (requester, created_at DESC);
CREATE INDEX requests_owner ON requests (owner_team, created_at DESC);
CREATE INDEX requests_status ON requests (status, created_at DESC);
CREATE INDEX requests_created ON requests (created_at DESC);

CREATE TABLE request_actions (
    request_id   text    NOT NULL REFERENCES requests ON DELETE CASCADE,
    position     integer NOT NULL,
    name         text    NOT NULL,
    type         text    NOT NULL,
    status       text    NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    outputs      jsonb   NOT NULL DEFAULT '{}',
    error        text,
    started_at   timestamptz,
    finished_at  timestamptz,
    external_key text,
    external_url text,
    PRIMARY KEY (request_id, name)
);

CREATE TABLE request_log (
    request_id      text        NOT NULL REFERENCES requests ON DELETE CASCADE,
    seq             integer     NOT NULL,
    at              timestamptz NOT NULL,
    level           text        NOT NULL,
    event_type      text        NOT NULL,
    message         text        NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}',
    global_position bigint      NOT NULL,
    PRIMARY KEY (request_id, seq)
);

-- How far each projector has read the store, in the relay's order.
CREATE TABLE projection_checkpoints (
    name            text PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A submit's Idempotency-Key, per requester: a repeated submit answers with the first request.
CREATE TABLE submit_idempotency (
    requester   text        NOT NULL,
    key         text        NOT NULL,
    body_hash   text        NOT NULL,
    request_id  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (requester, key)
);
