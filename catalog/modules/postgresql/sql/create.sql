-- The owner role and the database, each created only when missing: running this again, or after
-- a crash between the two statements, succeeds and changes nothing.
-- psql variables: db_name, owner_role.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', :'owner_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'owner_role')
\gexec

-- An admin login that is not a superuser (CREATEROLE, CREATEDB) must be a member of the role to
-- make it the owner; granting again only repeats a notice.
SELECT format('GRANT %I TO %I', :'owner_role', current_user)
 WHERE NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
\gexec

SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'owner_role')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'db_name')
\gexec
