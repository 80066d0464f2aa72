"""Request bodies of the REST API: strict (unknown keys refused), bounded, documented.

`TemplateProperties` is the template/delivery property set (`postroom.domain.properties`)
with every key optional, so one model serves creating, patching and overriding; the service
layer still checks each value against its rules (charsets, addresses, content).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from postroom.domain.properties import Properties

__all__ = ["DeliveryCreate", "Name", "ProofRequest", "RuleCreate", "TemplateCreate",
           "TemplateDuplicate", "TemplateProperties", "given"]

Name = Annotated[str, StringConstraints(min_length=1, max_length=100,
                                        pattern=r"^[^\x00-\x1f\x7f]+$")]
Address = Annotated[str, StringConstraints(min_length=3, max_length=320,
                                           pattern=r"^[^\s@]+@[^\s@]+$")]
Filter = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _optional(field: Any) -> Any:
    return (field.annotation | None, Field(None, description=field.description))


TemplateProperties: type[BaseModel] = create_model(
    "TemplateProperties", __config__=ConfigDict(extra="forbid"),
    **{name: _optional(field) for name, field in Properties.model_fields.items()})


def given(properties: BaseModel | None) -> dict[str, Any]:
    """Only the keys the client sent (a PATCH changes those and no other)."""
    if properties is None:
        return {}
    return properties.model_dump(mode="json", exclude_unset=True)


class TemplateCreate(_Strict):
    name: Name
    properties: TemplateProperties = Field(
        default_factory=TemplateProperties)


class TemplateDuplicate(_Strict):
    new_name: Name


class DeliveryCreate(_Strict):
    template: Name
    name: Name | None = None
    overrides: TemplateProperties = Field(
        default_factory=TemplateProperties)
    filters: list[Filter] = Field(default_factory=list, max_length=20,
                                  description="Audience filters, as `deliveries create "
                                  "--filter`; none: every recipient.")


class ProofRequest(_Strict):
    to: list[Address] = Field(default_factory=list, max_length=20,
                              description="Proof addresses; none: the delivery's own.")
    recipient: Address | None = Field(None, description="Personalize as this recipient.")


class RuleCreate(_Strict):
    id: Annotated[str, StringConstraints(min_length=1, max_length=64,
                                         pattern=r"^[A-Za-z0-9_.:-]+$")]
    pattern: Annotated[str, StringConstraints(max_length=1000)] = ""
    status: Annotated[str, StringConstraints(max_length=16)] = ""
    failure_type: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    reason: int = Field(ge=0, le=99)
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    position: int | None = Field(None, ge=0, le=100_000)
