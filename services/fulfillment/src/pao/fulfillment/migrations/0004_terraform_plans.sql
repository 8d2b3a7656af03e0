-- What a request does to its resource, and each action's current Terraform plan.
ALTER TABLE fulfillment_requests
    ADD COLUMN kind text NOT NULL DEFAULT 'create',
    ADD COLUMN resource_id text;
ALTER TABLE fulfillment_actions ADD COLUMN plan_id text;

-- Saved Terraform plans, where any worker can read them: `terraform apply PLANFILE` applies
-- exactly what was planned (and approved). A plan file holds the run's variable values, so it is
-- deleted once applied or replaced; until then it is readable only by PAO's database role.
CREATE TABLE terraform_plans (
    plan_id     text PRIMARY KEY,
    request_id  text        NOT NULL,
    action      text        NOT NULL,
    generation  integer     NOT NULL,
    workspace   text        NOT NULL,
    destroy     boolean     NOT NULL,
    plan_file   bytea,
    summary     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz,
    replaced_by text
);
CREATE INDEX terraform_plans_request ON terraform_plans (request_id, action);

-- A Terraform action's second step: apply a stored plan.
ALTER TABLE fulfillment_jobs DROP CONSTRAINT fulfillment_jobs_kind_check;
ALTER TABLE fulfillment_jobs ADD CONSTRAINT fulfillment_jobs_kind_check
    CHECK (kind IN ('execute', 'apply', 'poll', 'comment'));
