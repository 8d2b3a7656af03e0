-- What the notification service knows of each request, built from the request events it
-- receives: who to tell, what to call the request, its ticket, its status and escalation level.
CREATE TABLE notification_requests (
    request_id       text PRIMARY KEY,
    item_id          text    NOT NULL,
    item_name        text    NOT NULL,
    owner_team       text    NOT NULL,
    requester_id     text    NOT NULL,
    requester_name   text,
    requester_email  text,
    status           text    NOT NULL,
    jira_key         text,
    jira_url         text,
    escalation_level integer NOT NULL DEFAULT 0
);
