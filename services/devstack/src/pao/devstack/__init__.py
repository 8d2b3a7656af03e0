"""The PAO dev stack: embedded PostgreSQL, broker and JIRA, and `pao up`. Never in production
images: the server packages do not depend on it."""
