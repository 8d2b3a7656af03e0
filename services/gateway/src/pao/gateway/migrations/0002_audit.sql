-- The audit of commands (pao.gateway.audit): one row per POST, PUT, PATCH or DELETE the gateway
-- answered, accepted or refused. Rows are only ever inserted; `at` is when the answer was
-- decided. The indexes serve GET /audit's filters (by user, by the id acted on, by catalog item,
-- by time).
CREATE TABLE gateway_audit (
    audit_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    user_id        text,
    principal      text,
    access_key_id  text,
    method         text        NOT NULL,
    route          text        NOT NULL,
    target_id      text,
    item_id        text,
    status         smallint    NOT NULL,
    error_code     text,
    remote_addr    text,
    correlation_id text        NOT NULL
);
CREATE INDEX gateway_audit_at ON gateway_audit (at);
CREATE INDEX gateway_audit_user ON gateway_audit (user_id, audit_id);
CREATE INDEX gateway_audit_target ON gateway_audit (target_id, audit_id);
CREATE INDEX gateway_audit_item ON gateway_audit (item_id, audit_id);

CREATE FUNCTION gateway_audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit is append-only: % on gateway_audit is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER gateway_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON gateway_audit
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_audit_is_append_only();
