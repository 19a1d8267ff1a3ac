"""The base of every wire model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Wire"]


class Wire(BaseModel):
    """A response body. Extra fields are refused, so a named constructor that drifts from
    its model fails at once rather than sending fields the schema does not publish. The
    validator of a model is built on its first use, not at import: the CLI imports every
    model and uses one or two, and its start-up time counts."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
