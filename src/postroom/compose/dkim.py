"""DKIM signing (dkimpy): relaxed/relaxed over the headers that matter, per sending domain.

The signature is what `dkim.sign` gives, built from dkimpy's own parts (message parsing,
canonicalization, folding, header hashing) with the key loaded once per signer instead of once
per message. The RSA step (PKCS #1 v1.5, deterministic, so the same bytes either way) runs in
OpenSSL through `cryptography` when it is installed; dkimpy's pure-Python RSA takes ~10 ms per
message with a 2048-bit key, OpenSSL well under 1 ms. A key dkimpy cannot read goes through
`dkim.sign` itself, which reports it.

Pure, like the rest of composition: the signature time (`t=`) is the `now` the message was
rendered at (its Date), never the system clock, so the same message signs to the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import dkim
from dkim.canonicalization import (
    CanonicalizationPolicy,
    compress_whitespace,
    correct_empty_body,
    strip_trailing_lines,
    strip_trailing_whitespace,
)
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, UnparsableKeyError, parse_pem_private_key

__all__ = ["OVERSIGNED", "SIGNED_HEADERS", "DkimSigner", "body_hash", "canonical_lines"]

SIGNED_HEADERS = (
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"MIME-Version",
    b"Content-Type", b"Content-Transfer-Encoding", b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)

OVERSIGNED = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To")

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_NAME = b"DKIM-Signature"


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    private_key: bytes  # PEM

    def sign(self, message: bytes, *, now: datetime, head: int | None = None,
             body_hash: bytes | None = None) -> bytes:
        """The message with its DKIM-Signature header in front, signed at `now` (`t=`; an
        aware datetime, the time the message was rendered).

        A caller that knows them (the compiled path, ADR 0029) passes `head`, the size of the
        header block through its empty line, and `body_hash`, what `body_hash()` gives for the
        body: the same signature, without parsing and canonicalizing the body again.
        """
        header_block = message[:head] if head is not None else message.split(b"\r\n\r\n", 1)[0]
        present = {line.split(b":", 1)[0].strip().lower()
                   for line in header_block.split(b"\r\n")
                   if line and not line[:1].isspace()}
        # Each signed header is listed once more than it appears ("oversigning", RFC 6376
        # §8.15), so a second From or Subject added on the way breaks the signature.
        headers = [h for h in SIGNED_HEADERS if h.lower() in present] + list(OVERSIGNED)
        rsa = self._rsa
        if rsa is None:  # a key dkimpy cannot read: dkim.sign raises its error for it
            signature: bytes = dkim.sign(
                message, self.selector.encode(), self.domain.encode(), self.private_key,
                canonicalize=(b"relaxed", b"relaxed"), include_headers=headers,
                linesep=b"\r\n",
            )
        else:
            if head is not None and body_hash is not None:
                parsed = dkim.rfc822_parse(message[:head])[0], body_hash
            else:
                parsed = _parsed(message)
            signature = _signature(parsed, self.selector.encode(), self.domain.encode(),
                                   tuple(h.lower() for h in headers), rsa,
                                   int(now.timestamp()))
        return signature + message

    @cached_property
    def _rsa(self) -> Callable[[Any], bytes] | None:
        """PKCS #1 v1.5 signing of a SHA-256 hash object with this key, or None if the key
        does not load (then `dkim.sign` raises the error it has for it)."""
        try:
            key = parse_pem_private_key(self.private_key)
        except UnparsableKeyError:
            return None
        return _openssl_rsa(self.private_key, key) or _dkimpy_rsa(key)


def body_hash(canonical_pieces: list[bytes]) -> bytes:
    """The bh= value of a body given as pieces that each end with CRLF, each passed through
    `canonical_lines`: dkimpy's relaxed body canonicalization, whose whitespace rules do not
    reach past a line end, so that only the trailing empty lines are left for the whole."""
    body = correct_empty_body(strip_trailing_lines(b"".join(canonical_pieces)))
    return base64.b64encode(hashlib.sha256(body).digest())


def canonical_lines(piece: bytes) -> bytes:
    """dkimpy's relaxed canonicalization of CRLF-ended lines, but for trailing empty lines."""
    return compress_whitespace(strip_trailing_whitespace(piece))  # type: ignore[no-any-return]


def _parsed(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """(the header fields, bh=) of a message."""
    headers, body = dkim.rfc822_parse(message)
    return headers, base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())


def _signature(parsed: tuple[list[list[bytes]], bytes], selector: bytes, domain: bytes,
               include: tuple[bytes, ...], rsa: Callable[[Any], bytes], timestamp: int) -> bytes:
    """The DKIM-Signature header line of `dkim.sign(message, selector, domain, key,
    canonicalize=(b"relaxed", b"relaxed"), include_headers=include, linesep=b"\\r\\n")`
    when dkimpy's clock reads `timestamp` (`parsed`: the message's header fields and bh=):
    the steps of dkimpy's `DKIM.sign` and `DKIM.gen_header` for rsa-sha256, in its order."""
    headers, body_hash = parsed
    fields = [
        (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", _RELAXED.to_c_value()), (b"d", domain),
        (b"i", b"@" + domain), (b"q", b"dns/txt"), (b"s", selector),
        (b"t", str(timestamp).encode("ascii")), (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),  # folds b= onto its own line, as dkimpy does
    ]
    value = dkim.fold(b"; ".join(b"=".join(x) for x in fields), namelen=len(_NAME),
                      linesep=b"\r\n")
    value = dkim.RE_BTAG.sub(b"\\1", value)
    digest = hashlib.sha256()
    dkim.hash_headers(digest, _RELAXED, _RELAXED.canonicalize_headers(headers), include,
                      (_NAME, b" " + value), dict(fields))
    fields[-1] = (b"b", base64.b64encode(rsa(digest)))
    value = b"; ".join(b"=".join(x) for x in fields) + b"\r\n"
    folded: bytes = dkim.fold(value, namelen=len(_NAME), linesep=b"\r\n")
    return _NAME + b": " + folded


def _openssl_rsa(pem: bytes, parsed: dict[str, int]) -> Callable[[Any], bytes] | None:
    """OpenSSL's signing with the key dkimpy parsed from `pem` (None without cryptography)."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    except ImportError:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    numbers = key.private_numbers()
    if (numbers.public_numbers.n, numbers.d) != (parsed["modulus"], parsed["privateExponent"]):
        return None  # not the key dkimpy reads from this PEM
    scheme, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())

    def sign(digest: Any) -> bytes:
        signature: bytes = key.sign(digest.digest(), scheme, prehashed)
        return signature

    return sign


def _dkimpy_rsa(key: dict[str, int]) -> Callable[[Any], bytes]:
    def sign(digest: Any) -> bytes:
        return bytes(RSASSA_PKCS1_v1_5_sign(digest, key))

    return sign
