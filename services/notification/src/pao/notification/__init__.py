"""The PAO notification service: tells requesters and owning teams what happened to requests."""

#: The package holding this service's SQL migrations (`notification_outbox`).
MIGRATIONS = "pao.notification.migrations"
