"""Storage of templates; the built-in one cannot be changed. Mixed into `SqlStore`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from postroom.domain.models import Template
from postroom.domain.properties import Properties
from postroom.errors import InputError, NotFoundError, ReadOnlyError
from postroom.storage.schema import templates

__all__ = ["TemplateStore"]


class TemplateStore:
    engine: Engine

    def ensure_template(self, name: str, props: Properties, *, builtin: bool,
                        now: datetime) -> None:
        """Create the template if it does not exist (used for the built-in default)."""
        with self.engine.begin() as conn:
            if conn.scalar(select(templates.c.id).where(templates.c.name == name)) is None:
                conn.execute(insert(templates).values(
                    name=name, builtin=builtin, properties=props.model_dump(mode="json"),
                    created_at=now, updated_at=now))

    def create_template(self, name: str, props: Properties, now: datetime) -> Template:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(templates).values(
                    name=name, builtin=False, properties=props.model_dump(mode="json"),
                    created_at=now, updated_at=now))
        except IntegrityError:
            raise InputError(f"a template named {name!r} already exists") from None
        return self.get_template(name)

    def get_template(self, name: str) -> Template:
        with self.engine.connect() as conn:
            row = conn.execute(select(templates).where(templates.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"no template named {name!r} (see `postroom templates list`)")
        return Template(row.id, row.name, bool(row.builtin),
                        Properties.model_validate(row.properties), row.updated_at)

    def list_templates(self) -> list[Template]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(templates).order_by(templates.c.name)).all()
        return [Template(r.id, r.name, bool(r.builtin), Properties.model_validate(r.properties),
                         r.updated_at) for r in rows]

    def update_template(self, name: str, props: Properties, now: datetime) -> Template:
        self._writable(name)
        with self.engine.begin() as conn:
            conn.execute(update(templates).where(templates.c.name == name).values(
                properties=props.model_dump(mode="json"), updated_at=now))
        return self.get_template(name)

    def delete_template(self, name: str) -> None:
        self._writable(name)
        with self.engine.begin() as conn:
            conn.execute(delete(templates).where(templates.c.name == name))

    def _writable(self, name: str) -> None:
        if self.get_template(name).builtin:
            raise ReadOnlyError(
                f"{name!r} is the built-in template and cannot be changed; "
                f"duplicate it (`postroom templates duplicate {name} NEW`) and edit the copy"
            )
