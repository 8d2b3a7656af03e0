-- Owner, connection limit and comment of an existing database, changed in place.
-- psql variables: db_name, owner_role, connection_limit, comment ('' removes the comment).
\set ON_ERROR_STOP on

ALTER DATABASE :"db_name" OWNER TO :"owner_role";

SELECT format('ALTER DATABASE %I CONNECTION LIMIT %s', :'db_name', (:'connection_limit')::integer)
\gexec

COMMENT ON DATABASE :"db_name" IS :'comment';
