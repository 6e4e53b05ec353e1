"""The one base of every configuration model: unknown keys are errors, values are immutable."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A typo'd key fails at load with its name instead of being ignored; a loaded config is a value,
    shared by the processes that read it, so nothing may change it after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
