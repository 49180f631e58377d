"""VAPID key pairs (RFC 8292) for Web Push: generated once, stored, and the public half handed to browsers.

Pure: no I/O. The private key is a P-256 key in PKCS#8 PEM (what `WebPushChannel` takes); the public key is
the uncompressed P-256 point (65 bytes, 0x04 || X || Y) in base64url without padding, which is exactly what
a browser's `PushManager.subscribe({applicationServerKey})` accepts.
"""

from __future__ import annotations

import base64
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openmanager.core.errors import ConfigError

__all__ = ["VapidKeys", "b64url_decode", "b64url_encode", "generate_vapid_keys", "load_private_key",
           "public_key_from_private"]


class VapidKeys(NamedTuple):
    private_pem: str  # PKCS#8 PEM, unencrypted: store it like any other secret
    public_key: str  # uncompressed P-256 point, base64url without padding (87 characters)


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; raises ValueError on anything else."""
    raw = text.encode("ascii")
    return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)


def generate_vapid_keys() -> VapidKeys:
    """A fresh P-256 key pair. Generate once per hub and keep it: browsers bind each subscription to the
    public key, so a new key orphans every existing subscription."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode("ascii")
    return VapidKeys(pem, _public_b64(key.public_key()))


def load_private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """Parse a VAPID private key (PKCS#8 or SEC1 PEM); raises ConfigError if it is not an unencrypted P-256
    key. The message never includes the key."""
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ConfigError(f"the VAPID private key is not a readable unencrypted PEM key ({type(exc).__name__})") \
            from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError("the VAPID private key must be an elliptic-curve P-256 (prime256v1) key")
    return key


def public_key_from_private(pem: str) -> str:
    """The browser-facing public key (base64url, 65-byte uncompressed point) for a stored private key."""
    return _public_b64(load_private_key(pem).public_key())


def _public_b64(key: ec.EllipticCurvePublicKey) -> str:
    return b64url_encode(key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
