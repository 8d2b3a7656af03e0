-- The W3C trace context each event was appended in (NULL when the writer was not traced), so a
-- trace continues through the relay and Kafka into the consumers.
ALTER TABLE events ADD COLUMN traceparent text;
