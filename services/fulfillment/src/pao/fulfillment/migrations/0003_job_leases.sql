-- Any number of workers claim jobs side by side. A claim is a lease: the worker renews it while
-- the job runs; a job whose lease ran out (its worker died or froze) is claimed again, and the
-- old claim can no longer finish or reschedule it.
ALTER TABLE fulfillment_jobs ADD COLUMN claim text, ADD COLUMN lease_until timestamptz;
CREATE INDEX fulfillment_jobs_leased ON fulfillment_jobs (lease_until) WHERE state = 'running';
-- Which worker (host:pid) holds or last held the job.
ALTER TABLE fulfillment_jobs ADD COLUMN worker text;
