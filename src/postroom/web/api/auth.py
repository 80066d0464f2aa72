"""Who is calling: ``Authorization: Bearer <token>`` → the token's `Actor` → the services as
that actor sees them (`postroom.acting_as(actor)`), which check permissions and audit.

The API checks no permission itself: a refusal is the guard's `PermissionDenied` (403 naming
the permission); a missing, malformed or unknown token is `AuthenticationFailed` (401 with
``WWW-Authenticate: Bearer``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from postroom.accounts.actor import Actor
from postroom.accounts.guard import GuardedView
from postroom.errors import AuthenticationFailed

__all__ = ["Services", "actor_of", "services_of"]

_bearer = HTTPBearer(auto_error=False, description="An API token: `postroom tokens create`.")
MAX_HEADER = 512


async def actor_of(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationFailed("send an API token: Authorization: Bearer <token>")
    token = credentials.credentials.strip()
    if not token or len(token) > MAX_HEADER:
        raise AuthenticationFailed("not a Postroom API token")
    postroom = request.app.state.postroom
    remote = request.client.host if request.client else None
    actor: Actor = await run_in_threadpool(postroom.accounts.authenticate_token, token,
                                           remote=remote, origin="api")
    return actor


async def services_of(request: Request,
                      actor: Annotated[Actor, Depends(actor_of)]) -> GuardedView:
    """The application services as `actor` may use them (a `GuardedView`)."""
    view: GuardedView = request.app.state.postroom.acting_as(actor)
    return view


Services = Annotated[GuardedView, Depends(services_of)]
