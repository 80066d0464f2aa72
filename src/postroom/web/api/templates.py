"""``/templates``: list, read, create, change (PATCH: the keys given), duplicate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from postroom.web.api.auth import Services
from postroom.web.api.calls import call
from postroom.web.api.pagination import Page, PageQuery, page_of, paging
from postroom.web.api.schemas import (
    TemplateCreate,
    TemplateDuplicate,
    TemplateProperties,
    given,
)
from postroom.web.api.shapes import jsonable

__all__ = ["router"]

TemplateName = Annotated[str, Path(min_length=1, max_length=100)]


def _template(template: Any, problems: list[str] | None = None) -> dict[str, Any]:
    shown: dict[str, Any] = {"name": template.name, "builtin": template.builtin,
                             "updated_at": jsonable(template.updated_at),
                             "properties": jsonable(template.properties)}
    if problems is not None:
        shown["problems"] = problems
    return shown


def router() -> APIRouter:
    api = APIRouter(prefix="/templates", tags=["templates"])

    @api.get("", response_model=Page, summary="List templates")
    async def list_templates(services: Services,
                             page: Annotated[PageQuery, Depends(paging)]) -> Page:
        templates = await call(services.templates.list_templates)
        return page_of(templates, page, shape=_template)

    @api.post("", status_code=201, summary="Create a template")
    async def create_template(services: Services, body: TemplateCreate) -> dict[str, Any]:
        template = await call(services.templates.create_template, body.name,
                              given(body.properties))
        return _template(template)

    @api.get("/{name}", summary="One template, with its content problems")
    async def get_template(services: Services, name: TemplateName) -> dict[str, Any]:
        template = await call(services.templates.get_template, name)
        problems = await call(services.templates.content_problems, template.properties)
        return _template(template, problems)

    @api.patch("/{name}", summary="Change the properties given")
    async def update_template(services: Services, name: TemplateName,
                              body: TemplateProperties) -> dict[str, Any]:
        template = await call(services.templates.update_template, name, given(body))
        return _template(template)

    @api.post("/{name}/duplicate", status_code=201, summary="Copy a template under a new name")
    async def duplicate_template(services: Services, name: TemplateName,
                                 body: TemplateDuplicate) -> dict[str, Any]:
        template = await call(services.templates.duplicate_template, name, body.new_name)
        return _template(template)

    return api
