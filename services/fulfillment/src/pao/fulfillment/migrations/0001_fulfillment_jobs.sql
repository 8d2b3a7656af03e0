-- Work the fulfilment service has to do, kept in PostgreSQL so nothing is lost in a crash:
-- run an action, poll a JIRA issue, write to a ticket. Retries and parked work are jobs due later.
CREATE TABLE fulfillment_jobs (
    id          bigserial PRIMARY KEY,
    request_id  text        NOT NULL,
    action      text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('execute', 'poll', 'comment')),
    dedupe_key  text        NOT NULL UNIQUE,
    attempt     integer     NOT NULL DEFAULT 1,
    due_at      timestamptz NOT NULL DEFAULT now(),
    state       text        NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'running', 'done', 'cancelled')),
    payload     jsonb       NOT NULL DEFAULT '{}',
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fulfillment_jobs_due ON fulfillment_jobs (due_at) WHERE state = 'pending';
CREATE INDEX fulfillment_jobs_request ON fulfillment_jobs (request_id) WHERE state IN ('pending', 'running');
