# Creates the parameter's record. This module uses only Terraform's built-in resources so it runs
# anywhere; a deployment points it at the AWS provider's aws_ssm_parameter instead.
terraform {
  required_version = ">= 1.4"
}

variable "name" {
  type = string
}

variable "type" {
  type = string
  validation {
    condition     = contains(["String", "StringList", "SecureString"], var.type)
    error_message = "type must be String, StringList or SecureString."
  }
}

variable "value" {
  type      = string
  default   = ""
  sensitive = true
}

variable "kms_key_alias" {
  type    = string
  default = ""
}

variable "description" {
  type    = string
  default = ""
}

variable "tags" {
  type    = map(string)
  default = {}
}

resource "terraform_data" "parameter" {
  input = {
    name          = var.name
    type          = var.type
    kms_key_alias = var.kms_key_alias
    description   = var.description
    tags          = var.tags
  }
}

output "parameter_name" {
  value = terraform_data.parameter.output.name
}

output "parameter_arn" {
  value = "arn:aws:ssm:us-east-1:000000000000:parameter${terraform_data.parameter.output.name}"
}
