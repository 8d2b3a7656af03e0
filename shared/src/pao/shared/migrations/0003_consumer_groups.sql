-- Consumers scale out in Kafka consumer groups; offsets stay in PostgreSQL beside their effects.

-- Which instance owns each partition now: set when the group assigns it, checked (under a share
-- lock) in every transaction that applies one of its events, so an instance that froze and woke
-- after its partitions moved on cannot apply anything more from them.
CREATE TABLE consumer_partitions (
    consumer   text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL,
    owner      text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- The event at next_offset - 1: a consumer finding another event there (or none) knows the
-- broker's log is not the one it read, and reads the partition again from its start.
ALTER TABLE consumer_offsets ADD COLUMN last_event_id uuid;

-- What the relay last published to each partition (topic/partition -> next offset): a produce
-- answered with a lower offset means the broker lost its log, and the relay publishes again.
ALTER TABLE relay_checkpoints ADD COLUMN published jsonb NOT NULL DEFAULT '{}';

-- Which instance applied each event (host:pid of the process), for operators and tests.
ALTER TABLE processed_events ADD COLUMN handled_by text;
