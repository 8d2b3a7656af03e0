-- Notices waiting to be sent, and what became of each. One row per event, recipient and channel:
-- the unique key is what makes a redelivered event add nothing.
CREATE TABLE notification_outbox (
    id              bigserial   PRIMARY KEY,
    event_id        uuid        NOT NULL,
    recipient       text        NOT NULL,
    channel         text        NOT NULL,
    address         text,
    subject         text        NOT NULL,
    body            text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unknown')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- When a sender took the row for its current attempt; a row stuck in 'sending' long after
    -- this was interrupted mid-send and its outcome is unknown.
    claimed_at      timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT notification_outbox_once UNIQUE (event_id, recipient, channel)
);

CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at, id)
    WHERE status = 'pending';

CREATE INDEX notification_outbox_sending ON notification_outbox (claimed_at)
    WHERE status = 'sending';
