-- Requests pin their item by content hash; the read model keeps the aggregate's own state, so
-- the projector folds events through the aggregate without reading streams. A row without it
-- (written before this migration) is folded again from its stream when it next changes.
ALTER TABLE requests ADD COLUMN state jsonb;

-- A repeated submit is answered from the key's row alone, without folding the request.
ALTER TABLE submit_idempotency ADD COLUMN item_id text, ADD COLUMN item_version text;
UPDATE submit_idempotency k SET item_id = r.item_id, item_version = r.item_version
FROM requests r WHERE r.request_id = k.request_id;
