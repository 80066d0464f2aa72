"""Ed25519 keys for ledger checkpoints (the `cryptography` package).

The private key comes from the environment (`POSTROOM_ARCHIVE__LEDGER_KEY`) as 64 hex digits (the
32-byte seed) or a PEM PKCS#8 key; it is never printed. Public keys travel as 64 hex digits.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from postroom.archive.ledger import Checkpoint
from postroom.errors import ConfigError

__all__ = ["Signer", "new_private_key_hex", "verify_checkpoint"]


def _raw_public(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


class Signer:
    """Signs checkpoints; `repr` never shows the key."""

    def __init__(self, secret: str):
        text = secret.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
                if not isinstance(key, Ed25519PrivateKey):
                    raise ValueError("not an Ed25519 key")
                self._key = key
            else:
                self._key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
        except ValueError:
            raise ConfigError("archive.ledger_key: not an Ed25519 private key (64 hex digits "
                              "or a PEM PKCS#8 key); make one with `postroom archive ledger "
                              "keygen`") from None
        self.public_key = _raw_public(self._key.public_key())

    def __repr__(self) -> str:
        return f"Signer(public_key={self.public_key})"

    def checkpoint(self, count: int, head: str, time: datetime) -> Checkpoint:
        draft = Checkpoint(count, head, time, self.public_key, "")
        return Checkpoint(count, head, time, self.public_key,
                          self._key.sign(draft.payload()).hex())


def new_private_key_hex() -> tuple[str, str]:
    """A fresh key: (private seed hex, public key hex)."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption()).hex()
    return seed, _raw_public(key.public_key())


def verify_checkpoint(checkpoint: Checkpoint, public_key: str) -> bool:
    """True when `checkpoint` was signed by the holder of `public_key` (hex)."""
    if checkpoint.public_key != public_key:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(
            bytes.fromhex(checkpoint.signature), checkpoint.payload())
    except (InvalidSignature, ValueError):
        return False
    return True
