"""DKIM signing (dkimpy): relaxed/relaxed over the headers that matter, per sending domain."""

from __future__ import annotations

from dataclasses import dataclass

import dkim

__all__ = ["OVERSIGNED", "SIGNED_HEADERS", "DkimSigner"]

SIGNED_HEADERS = (
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"MIME-Version",
    b"Content-Type", b"Content-Transfer-Encoding", b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)

OVERSIGNED = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To")


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    private_key: bytes  # PEM

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature header in front."""
        present = {line.split(b":", 1)[0].strip().lower()
                   for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                   if line and not line[:1].isspace()}
        # Each signed header is listed once more than it appears ("oversigning", RFC 6376
        # §8.15), so a second From or Subject added on the way breaks the signature.
        headers = [h for h in SIGNED_HEADERS if h.lower() in present] + list(OVERSIGNED)
        signature: bytes = dkim.sign(
            message, self.selector.encode(), self.domain.encode(), self.private_key,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=headers, linesep=b"\r\n",
        )
        return signature + message
