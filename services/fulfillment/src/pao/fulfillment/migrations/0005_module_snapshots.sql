-- Terraform module snapshots by content hash: a deterministic tar of a module's files, named by
-- its sha256 (`sha256:<hex>`). The catalog stores one when it publishes an item naming the
-- module, in the transaction of the item's event; fulfilment unpacks the one an item's definition
-- names, so a request runs the module content published with the definition it pinned. Rows are
-- never changed; `source` and `revision` say where the content was first read (the module source
-- as an item names it, and the commit for git).
CREATE TABLE terraform_modules (
    module_hash text PRIMARY KEY,
    archive     bytea       NOT NULL,
    files       integer     NOT NULL,
    bytes       bigint      NOT NULL,
    source      text        NOT NULL,
    revision    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Each definition's module snapshots: module source -> module hash, from the catalog's event.
-- Empty for a definition the catalog published before it snapshotted modules.
ALTER TABLE fulfillment_definitions ADD COLUMN modules jsonb NOT NULL DEFAULT '{}';
