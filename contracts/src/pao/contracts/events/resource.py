"""Resource events (stream `resource-<resource_id>`): what a request made, through its life.

A resource is what a `create` request provisions; `update` and `decommission` requests change
it later. The request service writes these: the transition a request starts (updating,
decommissioning) in the same transaction as that request's submission, so two changes of one
resource cannot start at once, and the outcome once the request ends.

States: provisioning -> active -> updating -> active, (active | failed) -> decommissioning ->
decommissioned, and failed when a request ends without doing all it set out to do.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pao.contracts.events.base import REGISTRY, Event


def resource_stream(resource_id: str) -> str:
    """The stream of a resource."""
    return f"resource-{resource_id}"


class ResourceEvent(Event):
    category: ClassVar[str] = "resource"
    #: the state the resource is in after the event (None: unchanged)
    resource_state: ClassVar[str | None] = None
    resource_id: str
    #: the request that caused it
    request_id: str


class ResourceProvisioning(ResourceEvent):
    """A create request started making the resource."""

    event_type: ClassVar[str] = "ResourceProvisioning"
    resource_state: ClassVar[str | None] = "provisioning"
    item_id: str
    item_version: str
    item_hash: str
    item_name: str
    owner_team: str
    owner: str
    environment: str
    inputs: dict[str, Any]
    expires_at: str | None = None


class ResourceUpdating(ResourceEvent):
    """An update request started changing the resource to new inputs."""

    event_type: ClassVar[str] = "ResourceUpdating"
    resource_state: ClassVar[str | None] = "updating"
    by: str
    inputs: dict[str, Any]
    item_version: str
    item_hash: str


class ResourceDecommissioning(ResourceEvent):
    """A decommission request started removing the resource."""

    event_type: ClassVar[str] = "ResourceDecommissioning"
    resource_state: ClassVar[str | None] = "decommissioning"
    by: str
    reason: str


class ResourceResumed(ResourceEvent):
    """The request working on the resource was retried; `state` is the one it resumes."""

    event_type: ClassVar[str] = "ResourceResumed"
    state: str


class ResourceActivated(ResourceEvent):
    """A create or update request completed: the resource is as its inputs say."""

    event_type: ClassVar[str] = "ResourceActivated"
    resource_state: ClassVar[str | None] = "active"
    inputs: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    item_version: str


class ResourceDecommissioned(ResourceEvent):
    """The resource is gone."""

    event_type: ClassVar[str] = "ResourceDecommissioned"
    resource_state: ClassVar[str | None] = "decommissioned"


class ResourceFailed(ResourceEvent):
    """The request ended without finishing (failed, rejected or aborted): what exists may be
    partial; `note` says what is known of it."""

    event_type: ClassVar[str] = "ResourceFailed"
    resource_state: ClassVar[str | None] = "failed"
    error: str
    note: str | None = None


class ResourceExpiring(ResourceEvent):
    """The resource reaches its expiry at `expires_at` and will be decommissioned then."""

    event_type: ClassVar[str] = "ResourceExpiring"
    expires_at: str
    owner: str
    owner_team: str


RESOURCE_EVENTS = REGISTRY.register(
    ResourceProvisioning,
    ResourceUpdating,
    ResourceDecommissioning,
    ResourceResumed,
    ResourceActivated,
    ResourceDecommissioned,
    ResourceFailed,
    ResourceExpiring,
)
