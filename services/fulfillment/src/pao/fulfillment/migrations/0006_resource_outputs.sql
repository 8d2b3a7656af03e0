-- What the resource's earlier requests recorded, by action, as an update or a decommission was
-- submitted with it: its templates use them (`resource.outputs.<action>.<key>`), e.g. the id an
-- API gave the resource when it was created.
ALTER TABLE fulfillment_requests ADD COLUMN resource_outputs jsonb NOT NULL DEFAULT '{}';
