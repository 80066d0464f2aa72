"""What recipients reach from a message: mirror pages and unsubscribe links (the web app)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from postroom.app.context import AppContext
from postroom.compose.charsets import charset_for
from postroom.compose.tokens import MIRROR, UNSUBSCRIBE, read_token
from postroom.domain.models import Recipient
from postroom.errors import NotFoundError

__all__ = ["LinkService", "MirrorPage"]


@dataclass(frozen=True)
class MirrorPage:
    html: bytes
    charset: str
    expired: bool

    def to_json(self) -> dict[str, Any]:
        return {"html": self.html.decode(self.charset, "replace"), "charset": self.charset,
                "expired": self.expired}


class LinkService:
    def __init__(self, ctx: AppContext):
        self._ctx = ctx

    def mirror_url(self, log_id: int) -> str:
        """The URL of one message's mirror page (how `id_only` pages are reached)."""
        store = self._ctx.store
        if store.mirror_page(log_id) is None:
            log = store.get_log(log_id)
            raise NotFoundError(f"delivery log #{log_id} ({log.status}) has no mirror page")
        return self._ctx.planner.links.mirror_url(log_id)

    def open_mirror(self, token: str) -> MirrorPage | None:
        """The page a mirror link names: None if the token does not verify or no page."""
        log_id = read_token(self._ctx.planner.links.secret, MIRROR, token)
        page = None if log_id is None else self._ctx.store.mirror_page(log_id)
        if page is None:
            return None
        html, expires_at, delivery = page
        charset = charset_for(delivery.properties.charset).mime
        return MirrorPage(html, charset, expired=expires_at <= self._ctx.now())

    def purge_mirrors(self) -> int:
        return self._ctx.store.purge_mirror_pages(self._ctx.now())

    def unsubscribe(self, token: str) -> Recipient | None:
        """Opt out the recipient an unsubscribe link names; None if the token does not verify."""
        log_id = read_token(self._ctx.planner.links.secret, UNSUBSCRIBE, token)
        recipient = None if log_id is None else self._ctx.store.log_recipient(log_id)
        if recipient is not None:
            self._ctx.store.opt_out(recipient.id, self._ctx.now())
        return recipient

    def check_unsubscribe(self, token: str) -> Recipient | None:
        log_id = read_token(self._ctx.planner.links.secret, UNSUBSCRIBE, token)
        return None if log_id is None else self._ctx.store.log_recipient(log_id)
