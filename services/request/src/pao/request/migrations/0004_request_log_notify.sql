-- Wake the gateway's log streams (`logs?follow=true`) when a request's log grows, instead of
-- having each stream poll: one notification per request per projector transaction (PostgreSQL
-- folds repeats of the same payload within a transaction), delivered at commit.
CREATE FUNCTION notify_request_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pao_request_log', NEW.request_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER request_log_notify
    AFTER INSERT ON request_log
    FOR EACH ROW EXECUTE FUNCTION notify_request_log();

-- A status change that logs nothing (an event the log leaves out) still ends a stream.
CREATE TRIGGER request_status_notify
    AFTER UPDATE OF status ON requests
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_request_log();
