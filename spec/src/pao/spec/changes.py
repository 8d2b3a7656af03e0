"""What changed between two definitions of a catalog item: its form fields and its actions.

Fields are compared as a requester meets them: the property schema with `$ref`s to the common
types merged in (so a field moved from an inline enum to a shared type is not a change), `type`,
`required` (the form's top-level list), `enum`, `default`, the constraints (`pattern`, `minimum`,
...) and whether the field only exists while a condition applies. Actions (the fulfilment's and
the teardown's) are matched by name; a changed action names each key that differs, as a dotted
path down to the first place the two sides stop being objects (`rest.body.QueueName`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

from pao.spec.forms import describe_form

Change = Literal["added", "removed", "changed"]
#: The attributes of a field that are compared, in the order they are reported.
FIELD_ATTRIBUTES = ("type", "required", "enum", "default", "constraints", "conditional")


@dataclass(frozen=True)
class FieldShape:
    """One form field as far as a change to it matters."""

    type: str
    required: bool
    enum: list[Any] | None
    default: Any
    constraints: dict[str, Any]
    conditional: bool

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_ATTRIBUTES}


@dataclass(frozen=True)
class FieldChange:
    """A field added, removed, or changed in some of its attributes."""

    field: str
    change: Change
    before: FieldShape | None
    after: FieldShape | None
    #: for a changed field: attribute -> {"before", "after"} (an enum also lists values added
    #: and removed)
    attributes: dict[str, dict[str, Any]] = dataclass_field(default_factory=dict)

    @property
    def type_changed(self) -> bool:
        return "type" in self.attributes

    @property
    def newly_required(self) -> bool:
        """Required now, without a default to fill it in, and not required before."""
        after = self.after
        was_required = self.before is not None and self.before.required
        return after is not None and after.required and after.default is None and not was_required

    @property
    def enum_removed(self) -> list[Any]:
        return list(self.attributes.get("enum", {}).get("removed") or [])

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "change": self.change,
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
            "attributes": self.attributes,
            "newly_required": self.newly_required,
        }


@dataclass(frozen=True)
class ActionChange:
    """An action added, removed, or changed; `keys` are the dotted paths that differ."""

    section: Literal["actions", "teardown"]
    action: str
    change: Change
    type_before: str | None
    type_after: str | None
    keys: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "action": self.action,
            "change": self.change,
            "type_before": self.type_before,
            "type_after": self.type_after,
            "keys": list(self.keys),
        }


@dataclass(frozen=True)
class ItemDiff:
    """Every change from one definition of an item to another."""

    item_id: str
    version_before: str
    version_after: str
    fields: tuple[FieldChange, ...]
    actions: tuple[ActionChange, ...]
    #: the target's field names (a live input outside them has nowhere to go)
    fields_after: frozenset[str] = frozenset()

    @property
    def unchanged(self) -> bool:
        return not self.fields and not self.actions

    def change_of(self, name: str) -> FieldChange | None:
        return next((c for c in self.fields if c.field == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "fields": [c.as_dict() for c in self.fields],
            "actions": [c.as_dict() for c in self.actions],
        }


def form_fields(item: Mapping[str, Any]) -> dict[str, FieldShape]:
    """The fields of an item's form, in the form's order, with `$ref`s resolved."""
    form = item.get("form") or {}
    schema = form.get("schema") or {}
    required = set(schema.get("required") or [])
    described = describe_form(schema, {}, order=list(form.get("order") or []))
    return {
        f.name: FieldShape(
            type=f.type,
            required=f.name in required,
            enum=f.enum,
            default=f.default,
            constraints=f.constraints,
            conditional=f.conditional,
        )
        for f in described.fields
    }


def diff_items(before: Mapping[str, Any], after: Mapping[str, Any]) -> ItemDiff:
    """The changes that turn item definition `before` into `after` (pure; no I/O)."""
    old, new = form_fields(before), form_fields(after)
    return ItemDiff(
        item_id=str(_metadata(after).get("id") or _metadata(before).get("id") or ""),
        version_before=str(_metadata(before).get("version") or ""),
        version_after=str(_metadata(after).get("version") or ""),
        fields=tuple(_field_changes(old, new)),
        actions=(
            *_action_changes("actions", _actions(before), _actions(after)),
            *_action_changes("teardown", _teardown(before), _teardown(after)),
        ),
        fields_after=frozenset(new),
    )


def _metadata(item: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = item.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _field_changes(old: dict[str, FieldShape], new: dict[str, FieldShape]) -> Iterator[FieldChange]:
    for name, before in old.items():
        after = new.get(name)
        if after is None:
            yield FieldChange(name, "removed", before, None)
            continue
        attributes = {
            attribute: {"before": getattr(before, attribute), "after": getattr(after, attribute)}
            for attribute in FIELD_ATTRIBUTES
            if getattr(before, attribute) != getattr(after, attribute)
        }
        if "enum" in attributes:
            was, now = before.enum or [], after.enum or []
            attributes["enum"]["added"] = [v for v in now if v not in was]
            attributes["enum"]["removed"] = [v for v in was if v not in now]
        if attributes:
            yield FieldChange(name, "changed", before, after, attributes)
    for name, after in new.items():
        if name not in old:
            yield FieldChange(name, "added", None, after)


def _actions(item: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    fulfillment = item.get("fulfillment") or {}
    return [a for a in fulfillment.get("actions") or [] if isinstance(a, Mapping)]


def _teardown(item: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    lifecycle = item.get("lifecycle") or {}
    return [a for a in lifecycle.get("teardown") or [] if isinstance(a, Mapping)]


def _action_changes(
    section: Literal["actions", "teardown"],
    old: list[Mapping[str, Any]],
    new: list[Mapping[str, Any]],
) -> Iterator[ActionChange]:
    old_by_name = {str(a.get("name")): a for a in old}
    new_by_name = {str(a.get("name")): a for a in new}
    old_order = [n for n in old_by_name if n in new_by_name]
    new_order = [n for n in new_by_name if n in old_by_name]
    for name, before in old_by_name.items():
        after = new_by_name.get(name)
        if after is None:
            yield ActionChange(section, name, "removed", before.get("type"), None)
            continue
        keys = list(_differing_keys(before, after))
        # Only the actions both sides have are compared for order: adding one moves nothing.
        if old_order.index(name) != new_order.index(name):
            keys.insert(0, "order")
        if keys:
            yield ActionChange(
                section, name, "changed", before.get("type"), after.get("type"), tuple(keys)
            )
    for name, after in new_by_name.items():
        if name not in old_by_name:
            yield ActionChange(section, name, "added", None, after.get("type"))


def _differing_keys(before: Any, after: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths where two values differ, descending while both sides are objects."""
    for key in sorted(set(before) | set(after), key=str):
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            yield from _differing_keys(old, new, path + ".")
        else:
            yield path
