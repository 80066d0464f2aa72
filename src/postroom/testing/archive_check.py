"""Check a finished delivery against what the capture servers received.

Used by the demo and by the acceptance tests: the archive must hold exactly one byte-identical
copy of each accepted message and none of the others, and no header may reveal the BCC address.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default

from postroom.domain.models import DeliveryLog
from postroom.domain.states import LogStatus
from postroom.testing.smtp_server import Received

__all__ = ["ArchiveCheck", "check_archive"]


@dataclass
class ArchiveCheck:
    sent_logs: int = 0
    failed_logs: int = 0
    relay_received: int = 0
    archive_received: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _message_id(data: bytes) -> str:
    return str(BytesHeaderParser(policy=default).parsebytes(data).get("Message-ID", ""))


def _headers(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def check_archive(
    logs: list[DeliveryLog],
    relay: list[Received],
    archive: list[Received],
    *,
    bcc_address: str,
    max_problems: int = 20,
) -> ArchiveCheck:
    """Compare the delivery logs, the recipients' relay and the archive mailbox."""
    check = ArchiveCheck(relay_received=len(relay), archive_received=len(archive))

    def problem(text: str) -> None:
        if len(check.problems) < max_problems:
            check.problems.append(text)

    sent = {log.message_id or "": log for log in logs if log.status is LogStatus.SENT}
    check.sent_logs = len(sent)
    check.failed_logs = sum(1 for log in logs if log.status is LogStatus.FAILED)
    relay_by_id = {_message_id(m.data): m for m in relay}
    archive_ids = Counter(_message_id(m.data) for m in archive)
    needle = bcc_address.lower().encode()
    for message in [*relay, *archive]:
        if needle in _headers(message.data).lower():
            problem(f"a message's headers contain the BCC address: {_message_id(message.data)}")
    for message in relay:
        if any(r.lower() == bcc_address.lower() for r in message.rcpt_tos):
            problem("the BCC address was a recipient of a recipient's transaction")
    for message in archive:
        mid = _message_id(message.data)
        if message.rcpt_tos != (bcc_address,):
            problem(f"archive copy {mid} went to {message.rcpt_tos}, not only the BCC address")
        if archive_ids[mid] > 1:
            problem(f"archive holds {archive_ids[mid]} copies of {mid}")
        log = sent.get(mid)
        if log is None:
            problem(f"archive holds {mid}, which is not a sent message")
            continue
        original = relay_by_id.get(mid)
        if original is None or original.data != message.data:
            problem(f"archive copy of {mid} differs from what the recipient's relay received")
        if hashlib.sha256(message.data).hexdigest() != log.sha256:
            problem(f"archive copy of {mid} does not match the SHA-256 in its delivery log")
    for mid, log in sent.items():
        if archive_ids[mid] == 0:
            problem(f"sent message {mid} ({log.email}) has no archive copy")
        if mid not in relay_by_id:
            problem(f"log {log.id} is sent but the relay has no message {mid}")
    if len(sent) != len(archive):
        problem(f"{len(sent)} sent logs but {len(archive)} archive copies")
    return check
