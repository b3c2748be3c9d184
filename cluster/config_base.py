"""The base of every config section: unknown keys are errors, values are frozen, and each field's
docstring is its line in the README's config reference."""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
