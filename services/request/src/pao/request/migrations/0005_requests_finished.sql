-- The platform's figures (`GET /api/v1/stats`) count and time the requests that finished in the
-- last hour; without this index that would read every request ever made.
CREATE INDEX requests_finished ON requests (finished_at) WHERE finished_at IS NOT NULL;
