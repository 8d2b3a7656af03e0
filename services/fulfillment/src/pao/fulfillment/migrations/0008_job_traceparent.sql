-- The W3C trace context a job was scheduled in (NULL when nothing was traced): the worker that
-- runs the job continues that trace, so an action's calls join the request's trace.
ALTER TABLE fulfillment_jobs ADD COLUMN traceparent text;
