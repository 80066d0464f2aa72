"""The instance settings the unit tests make plans with (one copy for every test module)."""

from __future__ import annotations

from postroom.delivery.plan import Links
from postroom.settings import DefaultsSettings, SendingSettings

DEFAULTS = DefaultsSettings(
    from_name="Postroom", from_address="postroom@platform.example", reply_to="",
    errors_to="bounces@platform.example", retry_period_minutes=60, max_retries=5,
    validity_days=5,
)
SENDING = SendingSettings(quick_retries=2, quick_retry_seconds=5)
LINKS = Links("https://mail.example.com", b"k" * 32, "")
