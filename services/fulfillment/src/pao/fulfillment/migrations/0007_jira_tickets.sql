-- The JIRA issues fulfilment opens, one per run (generation) of a jira action: the marker is
-- written before JIRA is asked to create the issue and the key right after it answers, so a run
-- resumed after a crash knows whether it may have created one (see pao.fulfillment.tickets).
CREATE TABLE fulfillment_tickets (
    request_id  text        NOT NULL,
    action      text        NOT NULL,
    generation  integer     NOT NULL,
    label       text        NOT NULL,
    project     text        NOT NULL,
    issue_key   text,
    opening_at  timestamptz NOT NULL DEFAULT now(),
    opened_at   timestamptz,
    PRIMARY KEY (request_id, action, generation)
);
