# The values are checked by the preconditions of terraform_data.database (main.tf) rather than by
# validation blocks: Terraform records the results of several variable validations in the state in
# an order that changes from run to run, so an apply that changes nothing would still write a new
# state. Preconditions of one resource are recorded as one result.

variable "admin_url" {
  description = "libpq URL of the server's admin login, e.g. postgresql://postgres@db.internal:5432/postgres. Without a password: psql reads it from PGPASSWORD (or ~/.pgpass) of the process running terraform."
  type        = string
}

variable "db_name" {
  description = "Name of the database: 3 to 63 lower-case letters, digits and underscores, starting with a letter. Changing it replaces the database (the old one is dropped)."
  type        = string
}

variable "owner_role" {
  description = "Login role that owns the database; empty means \"<db_name>_owner\". Changing it replaces the database and the role."
  type        = string
  default     = ""
}

variable "connection_limit" {
  description = "Maximum concurrent connections to the database; -1 means no limit. Changed in place."
  type        = number
  default     = -1
}

variable "owner_password" {
  description = "Password of the owner role; empty means a role without a password. Changed in place."
  type        = string
  default     = ""
  sensitive   = true
}

variable "password_version" {
  description = "Bump to set the owner's password again (rotation, or after it was changed elsewhere)."
  type        = number
  default     = 1
}

variable "labels" {
  description = "Labels recorded as JSON in the database's comment (COMMENT ON DATABASE); no labels, no comment. Changed in place."
  type        = map(string)
  default     = {}
}
