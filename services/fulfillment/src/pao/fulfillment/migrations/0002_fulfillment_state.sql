-- What fulfilment knows, in its own tables, built from the events it receives (event-carried
-- state): the requests it works on, each action's current run, and item definitions by hash.

-- A request as fulfilment needs it to render and run actions; stream_version is the version of
-- its own stream fulfillment-<request_id>, appended to under this row's lock.
CREATE TABLE fulfillment_requests (
    request_id      text PRIMARY KEY,
    item_id         text        NOT NULL,
    item_version    text        NOT NULL,
    item_hash       text        NOT NULL,
    correlation_id  text,
    requester       jsonb       NOT NULL,
    environment     text        NOT NULL,
    inputs          jsonb       NOT NULL,
    submitted_at    timestamptz NOT NULL,
    aborted         boolean     NOT NULL DEFAULT false,
    stream_version  integer     NOT NULL DEFAULT 0
);

-- The current run (generation) of each dispatched action, folded from fulfilment's own events.
CREATE TABLE fulfillment_actions (
    request_id  text    NOT NULL REFERENCES fulfillment_requests ON DELETE CASCADE,
    action      text    NOT NULL,
    type        text    NOT NULL,
    generation  integer NOT NULL,
    status      text    NOT NULL,
    attempt     integer NOT NULL DEFAULT 0,
    outputs     jsonb   NOT NULL DEFAULT '{}',
    ticket_key  text,
    ticket_url  text,
    PRIMARY KEY (request_id, action)
);

-- Item definitions by content hash, from the catalog's events: a request pins one of them.
CREATE TABLE fulfillment_definitions (
    item_hash    text PRIMARY KEY,
    item_id      text        NOT NULL,
    item_version text        NOT NULL,
    definition   jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- Jobs name the run (generation) they belong to, so a job of a run that was reset does nothing.
ALTER TABLE fulfillment_jobs ADD COLUMN generation integer NOT NULL DEFAULT 0;
