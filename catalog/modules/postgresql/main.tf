# A PostgreSQL database and the login role that owns it, on an existing server, through psql.
#
# Only Terraform's built-in terraform_data resources: every change is a psql script in sql/,
# run by a local-exec provisioner. Each script can run again (after a crash, or with the objects
# already there) and then changes nothing.
#
#   terraform_data.database  creates the role and the database; drops both on destroy.
#                            Replaced (dropped and created again) only when db_name or
#                            owner_role change.
#   terraform_data.settings  owner, connection limit and comment: ALTER DATABASE, re-run when
#                            they change. The database stays.
#   terraform_data.password  LOGIN and the password: ALTER ROLE, re-run when the password or
#                            password_version change.
terraform {
  required_version = ">= 1.4"
}

locals {
  owner_role = var.owner_role != "" ? var.owner_role : "${substr(var.db_name, 0, 57)}_owner"

  # host, port and ?query of admin_url (a precondition below rejects URLs of another shape).
  url_pattern = "^postgres(?:ql)?://(?:[^/?#@]*@)?(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9._-]+)(?::([0-9]+))?(?:/[^?#]*)?(\\?[^#]*)?$"
  url_parts   = try(regex(local.url_pattern, var.admin_url), ["", null, null])
  host        = local.url_parts[0]
  port        = local.url_parts[1] == null ? 5432 : tonumber(local.url_parts[1])
  query       = local.url_parts[2] == null || local.url_parts[2] == "?" ? "" : local.url_parts[2]

  # No labels, no comment (an empty comment removes it).
  comment = length(var.labels) == 0 ? "" : jsonencode(var.labels)

  # -X: no ~/.psqlrc; values travel as environment variables, never inside the command line.
  psql = "psql -X -q -v ON_ERROR_STOP=1 -d \"$ADMIN_URL\""
}

resource "terraform_data" "database" {
  triggers_replace = {
    db_name    = var.db_name
    owner_role = local.owner_role
  }

  # Everything the destroy-time provisioner needs: it may only read `self`.
  input = {
    admin_url  = var.admin_url
    db_name    = var.db_name
    owner_role = local.owner_role
  }

  lifecycle {
    precondition {
      condition     = can(regex(local.url_pattern, var.admin_url))
      error_message = "admin_url must be a postgresql:// (or postgres://) URL with a host, e.g. postgresql://postgres@127.0.0.1:5432/postgres."
    }
    precondition {
      condition     = !can(regex("^postgres(ql)?://[^/?#@]*:[^/?#@]*@", var.admin_url)) && !can(regex("[?&]password=", var.admin_url))
      error_message = "admin_url must not contain a password; set PGPASSWORD in the environment of terraform instead."
    }
    precondition {
      condition     = can(regex("^[a-z][a-z0-9_]{2,62}$", var.db_name))
      error_message = "db_name must match ^[a-z][a-z0-9_]{2,62}$."
    }
    precondition {
      condition     = var.owner_role == "" || (can(regex("^[a-z][a-z0-9_]{2,62}$", var.owner_role)) && !startswith(var.owner_role, "pg_"))
      error_message = "owner_role must be empty or match ^[a-z][a-z0-9_]{2,62}$ and not start with pg_ (reserved)."
    }
    precondition {
      condition     = var.connection_limit >= -1 && floor(var.connection_limit) == var.connection_limit
      error_message = "connection_limit must be a whole number, -1 (no limit) or more."
    }
    precondition {
      condition     = floor(var.password_version) == var.password_version
      error_message = "password_version must be a whole number."
    }
  }

  provisioner "local-exec" {
    command = "${local.psql} -v db_name=\"$DB_NAME\" -v owner_role=\"$OWNER_ROLE\" -f \"$SQL_FILE\""
    environment = {
      ADMIN_URL         = var.admin_url
      DB_NAME           = var.db_name
      OWNER_ROLE        = local.owner_role
      SQL_FILE          = "${path.module}/sql/create.sql"
      PGCONNECT_TIMEOUT = "15"
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "psql -X -q -v ON_ERROR_STOP=1 -d \"$ADMIN_URL\" -v db_name=\"$DB_NAME\" -v owner_role=\"$OWNER_ROLE\" -f \"$SQL_FILE\""
    environment = {
      ADMIN_URL         = self.input.admin_url
      DB_NAME           = self.input.db_name
      OWNER_ROLE        = self.input.owner_role
      SQL_FILE          = "${path.module}/sql/destroy.sql"
      PGCONNECT_TIMEOUT = "15"
    }
  }
}

resource "terraform_data" "settings" {
  triggers_replace = {
    database         = terraform_data.database.id
    connection_limit = var.connection_limit
    comment          = local.comment
  }

  provisioner "local-exec" {
    command = "${local.psql} -v db_name=\"$DB_NAME\" -v owner_role=\"$OWNER_ROLE\" -v connection_limit=\"$CONNECTION_LIMIT\" -v comment=\"$COMMENT\" -f \"$SQL_FILE\""
    environment = {
      ADMIN_URL         = var.admin_url
      DB_NAME           = terraform_data.database.output.db_name
      OWNER_ROLE        = terraform_data.database.output.owner_role
      CONNECTION_LIMIT  = tostring(var.connection_limit)
      COMMENT           = local.comment
      SQL_FILE          = "${path.module}/sql/settings.sql"
      PGCONNECT_TIMEOUT = "15"
    }
  }
}

resource "terraform_data" "password" {
  # A digest, not the password, decides when to run again; plans show it as (sensitive value).
  triggers_replace = {
    database = terraform_data.database.id
    password = sha256(var.owner_password)
    version  = var.password_version
  }

  # The password reaches psql only through OWNER_PASSWORD; Terraform hides the output of a
  # provisioner that has sensitive values in its configuration.
  provisioner "local-exec" {
    command = "${local.psql} -v owner_role=\"$OWNER_ROLE\" -v has_password=\"$HAS_PASSWORD\" -f \"$SQL_FILE\""
    environment = {
      ADMIN_URL         = var.admin_url
      OWNER_ROLE        = terraform_data.database.output.owner_role
      HAS_PASSWORD      = var.owner_password == "" ? "false" : "true"
      OWNER_PASSWORD    = var.owner_password
      SQL_FILE          = "${path.module}/sql/password.sql"
      PGCONNECT_TIMEOUT = "15"
    }
  }
}
