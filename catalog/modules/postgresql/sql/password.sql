-- LOGIN and the password of the owner role, changed in place.
-- psql variables: owner_role, has_password (true/false); the password comes from the
-- OWNER_PASSWORD environment variable and never appears on a command line.
\set ON_ERROR_STOP on
-- Errors without the statement or its context, which would hold the password.
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- A superuser keeps the statement out of the server log as well.
SELECT rolsuper AS admin_is_superuser FROM pg_catalog.pg_roles WHERE rolname = current_user
\gset
\if :admin_is_superuser
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';
\endif

\if :has_password
\set owner_password `printf '%s' "$OWNER_PASSWORD"`
ALTER ROLE :"owner_role" LOGIN PASSWORD :'owner_password';
\unset owner_password
\else
ALTER ROLE :"owner_role" LOGIN PASSWORD NULL;
\endif
