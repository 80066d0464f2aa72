"""The REST API (``/api/v1``): FastAPI over the application services, as one actor sees them.

`create_api(postroom)` builds it explicitly from one router per concern. Every handler calls
``postroom.acting_as(actor).<concern>.<method>``: the permission checks and the audit are the
service layer's, never the API's. Errors are RFC 9457 problems (`problems`), bodies are bounded
(`guard`), lists are paged (`pagination`). See docs/api.md and ADR 0025.
"""

from postroom.web.api.app import create_api

__all__ = ["create_api"]
