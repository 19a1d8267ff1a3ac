"""The base of every wire model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Wire(BaseModel):
    """A response body. Extra fields are refused, so a named constructor that drifts from
    its model fails at once rather than sending fields the schema does not publish."""

    model_config = ConfigDict(extra="forbid")
