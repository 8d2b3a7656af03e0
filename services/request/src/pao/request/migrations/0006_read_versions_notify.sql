-- Tell the gateways which request and resource rows changed, and to what stream version, so a
-- conditional read (`If-None-Match`) is answered from the versions a gateway keeps in memory
-- while nothing changed (pao.gateway.caching). A request's row also touches its resource, whose
-- answer lists the resource's requests. Emptying the tables (a rebuild) tells the gateways to
-- forget every version. Delivered at commit, in commit order; PostgreSQL folds repeats of the
-- same payload within a transaction.
CREATE FUNCTION notify_read_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
    version integer;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('pao_read_versions', '{"reset": true}');
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
        version := NEW.stream_version;
    END IF;
    IF TG_TABLE_NAME = 'requests' THEN
        PERFORM pg_notify('pao_read_versions', json_build_object(
            'stream', 'request-' || changed.request_id,
            'version', version,
            'resource', changed.resource_id)::text);
    ELSE
        PERFORM pg_notify('pao_read_versions', json_build_object(
            'stream', 'resource-' || changed.resource_id,
            'version', version)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER requests_read_version_added
    AFTER INSERT OR DELETE ON requests
    FOR EACH ROW EXECUTE FUNCTION notify_read_version();
CREATE TRIGGER requests_read_version_changed
    AFTER UPDATE ON requests
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION notify_read_version();
CREATE TRIGGER requests_read_versions_emptied
    AFTER TRUNCATE ON requests
    FOR EACH STATEMENT EXECUTE FUNCTION notify_read_version();

CREATE TRIGGER resources_read_version_added
    AFTER INSERT OR DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION notify_read_version();
CREATE TRIGGER resources_read_version_changed
    AFTER UPDATE ON resources
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION notify_read_version();
CREATE TRIGGER resources_read_versions_emptied
    AFTER TRUNCATE ON resources
    FOR EACH STATEMENT EXECUTE FUNCTION notify_read_version();
