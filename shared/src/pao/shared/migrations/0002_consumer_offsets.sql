-- Where each consumer has got to on each partition it reads (kept by PAO, not by the broker, so
-- that start-up needs no group coordination and offsets move with the consumer's own effects).
CREATE TABLE consumer_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);
