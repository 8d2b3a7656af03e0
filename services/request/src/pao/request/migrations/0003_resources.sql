-- What requests made (resources) and what each request does to one (kind).
ALTER TABLE requests ADD COLUMN kind text NOT NULL DEFAULT 'create', ADD COLUMN resource_id text;
CREATE INDEX requests_resource ON requests (resource_id, created_at) WHERE resource_id IS NOT NULL;
-- Requests that wait for an approval are listed for their approvers.
CREATE INDEX requests_awaiting_approval ON requests (created_at) WHERE status = 'awaiting_approval';

CREATE TABLE resources (
    resource_id     text PRIMARY KEY,
    item_id         text        NOT NULL,
    item_version    text        NOT NULL,
    item_name       text        NOT NULL,
    owner_team      text        NOT NULL,
    owner           text        NOT NULL,
    environment     text        NOT NULL,
    state           text        NOT NULL,
    inputs          jsonb       NOT NULL,
    outputs         jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    expiry_noticed  timestamptz,
    last_request_id text        NOT NULL,
    note            text,
    stream_version  integer     NOT NULL,
    snapshot        jsonb       NOT NULL
);
CREATE INDEX resources_owner ON resources (owner, created_at DESC);
CREATE INDEX resources_team ON resources (owner_team, created_at DESC);
CREATE INDEX resources_item ON resources (item_id, created_at DESC);
CREATE INDEX resources_expiring ON resources (expires_at) WHERE state = 'active';
