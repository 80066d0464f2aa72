"""Two ASGI layers around the REST API: bounded request bodies and no traceback ever.

`BodyLimit` refuses a body whose Content-Length is over its bound before reading it, and
counts what arrives otherwise (a chunked upload): past the bound, the next read raises
`BodyTooLarge`, which the problem handlers turn into 413. A multipart upload to a path that
takes one (`UPLOADS`) has its own bound (web.api_max_upload_bytes); every other body the JSON
one (web.api_max_json_bytes).

`CatchAll` turns an exception nobody handled into a 500 problem with a reference; the traceback
goes to the log, never to the client.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postroom.web.api.problems import BodyTooLarge, internal_error

__all__ = ["UPLOADS", "BodyLimit", "CatchAll"]

UPLOADS = ("/recipients/import",)  # the paths that take an upload; every other: the JSON bound


class BodyLimit:
    def __init__(self, app: ASGIApp, *, json_bytes: int, upload_bytes: int):
        self.app = app
        self.json_bytes = json_bytes
        self.upload_bytes = upload_bytes

    def bound(self, scope: Scope) -> tuple[int, str]:
        headers = dict(scope.get("headers") or [])
        kind = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if kind == b"multipart/form-data" and str(scope.get("path", "")).endswith(UPLOADS):
            return self.upload_bytes, "upload"
        return self.json_bytes, "request body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.bound(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = declared is not None and (not declared.isdigit() or int(declared) > limit)
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            if too_big:
                raise BodyTooLarge(limit, what)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit, what)
            return message

        await self.app(scope, bounded, send)


class CatchAll:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if started:  # a stream broke midway: nothing more can be said to this client
                raise
            response = internal_error(exc, scope.get("method", ""), scope.get("path", ""))
            await response(scope, receive, send)
