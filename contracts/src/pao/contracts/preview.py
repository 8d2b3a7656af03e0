"""REST bodies of the Phase 3 endpoints: validate a request, preview a form, test variables."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pao.contracts.commands import Mode


class ValidateRequestBody(BaseModel):
    """`POST /validate/request`."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=100)
    inputs: dict[str, Any] = Field(default_factory=dict)
    #: the mode the request would run in (its actions differ in manual mode); default: the
    #: item's default mode
    mode: Mode | None = None


class PreviewFormBody(BaseModel):
    """`POST /preview/form`: the inputs entered so far, possibly none."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=100)
    inputs: dict[str, Any] = Field(default_factory=dict)


class TestVariablesBody(BaseModel):
    """`POST /test/variables`: a template, or an item's action, and a context keyed by scope."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest test class

    template: str | None = Field(default=None, max_length=65_536)
    item_id: str | None = Field(default=None, max_length=100)
    action: str | None = Field(default=None, max_length=100)
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def one_subject(self) -> TestVariablesBody:
        if (self.template is None) == (self.item_id is None):
            raise ValueError("send either template, or item_id and action")
        if self.item_id is not None and not self.action:
            raise ValueError("action is required with item_id")
        return self
