"""The web portal: server-rendered pages under `/portal/` on the same handlers as the API."""
