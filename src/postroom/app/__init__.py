"""Application services: what an operator can do, one module per concern (ADR 0023).

The CLI, the web API and the console call these, never the store: `postroom.wiring.build()`
returns the `Postroom` container (`postroom.deliveries.create_delivery(...)`), whose attributes
are the services listed in `postroom.accounts.policy.REQUIRED`.
"""

from postroom.app.container import Postroom

__all__ = ["Postroom"]
