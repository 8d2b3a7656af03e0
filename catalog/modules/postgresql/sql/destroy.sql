-- Drops the database (ending its connections first) and the owner role; missing ones are
-- skipped, so running this again succeeds.
-- psql variables: db_name, owner_role.
\set ON_ERROR_STOP on

SELECT current_setting('server_version_num')::integer >= 130000 AS drop_with_force
\gset

\if :drop_with_force
DROP DATABASE IF EXISTS :"db_name" WITH (FORCE);
\else
-- Before PostgreSQL 13: refuse new connections, end the open ones, then drop (DROP DATABASE
-- waits a few seconds for ended sessions to go away).
SELECT format('ALTER DATABASE %I ALLOW_CONNECTIONS false', :'db_name')
 WHERE EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'db_name')
\gexec
SELECT count(pg_catalog.pg_terminate_backend(pid)) AS ended_sessions
  FROM pg_catalog.pg_stat_activity
 WHERE datname = :'db_name' AND pid <> pg_catalog.pg_backend_pid()
\gset
DROP DATABASE IF EXISTS :"db_name";
\endif

-- Privileges and objects the role still holds in this (the admin) database would block DROP ROLE.
SELECT format('DROP OWNED BY %I', :'owner_role')
 WHERE EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'owner_role')
\gexec
DROP ROLE IF EXISTS :"owner_role";
