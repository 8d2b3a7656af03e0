# Outputs wait for the settings and the password, so whoever uses them finds the database ready.

output "database" {
  description = "Name of the database."
  value       = terraform_data.database.output.db_name
  depends_on  = [terraform_data.settings, terraform_data.password]
}

output "owner_role" {
  description = "Login role that owns the database."
  value       = terraform_data.database.output.owner_role
  depends_on  = [terraform_data.settings, terraform_data.password]
}

output "host" {
  description = "Host of the server, as written in admin_url."
  value       = local.host
}

output "port" {
  description = "Port of the server (5432 when admin_url names none)."
  value       = local.port
}

output "connection_url" {
  description = "libpq URL for the owner role, without the password; admin_url's query parameters (e.g. sslmode) are kept."
  value       = "postgresql://${terraform_data.database.output.owner_role}@${local.host}:${local.port}/${terraform_data.database.output.db_name}${local.query}"
  depends_on  = [terraform_data.settings, terraform_data.password]
}

output "owner_password" {
  description = "Password of the owner role (empty when it has none)."
  value       = var.owner_password
  sensitive   = true
}
