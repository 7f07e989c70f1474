"""AES-128-ECB with PKCS7 padding, in one shot or streamed (PROTOCOL.md §7.1, §7.6).

The CDN stores every file encrypted with its own random 16-byte key, ECB mode, no IV and
PKCS7 padding, so the ciphertext is always ``(n // 16 + 1) * 16`` bytes. The streaming
classes keep memory bounded by the chunk size whatever the file size.

Key encodings: ``getuploadurl`` takes the key as 32 lowercase hex characters; messages carry
``aes_key`` = base64 of either the raw 16 bytes or of the 32 hex characters; inbound images
may also carry ``image_item.aeskey`` = hex of the raw key. Every key made or decoded here is
registered with :func:`ilink.log.register_secret` so that logs mask it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ilinkbot.ilink.log import register_secret

from .errors import CdnDownloadError, MediaRefused

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_SIZE",
    "StreamDecryptor",
    "StreamEncryptor",
    "ciphertext_size",
    "decode_aes_key",
    "decrypt",
    "encrypt",
    "file_md5_and_size",
    "iter_file_chunks",
    "key_from_hex",
    "message_aes_key",
    "new_aes_key",
]

BLOCK_SIZE = 16
#: Plaintext read per step when streaming (1 MiB).
CHUNK_SIZE = 1 << 20

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def ciphertext_size(plaintext_size: int) -> int:
    """Size of the AES-128-ECB/PKCS7 ciphertext: a whole padding block when already aligned."""
    if plaintext_size < 0:
        raise ValueError("plaintext size must not be negative")
    return (plaintext_size // BLOCK_SIZE + 1) * BLOCK_SIZE


def _check_key(key: bytes) -> None:
    if len(key) != BLOCK_SIZE:
        raise ValueError(f"AES-128 key must be 16 bytes, got {len(key)}")


def new_aes_key() -> bytes:
    """A fresh random 16-byte key (its hex form is registered as a log secret)."""
    key = secrets.token_bytes(BLOCK_SIZE)
    register_secret(key.hex())
    return key


def key_from_hex(hex_key: str) -> bytes:
    """The 16 raw bytes of a key given as 32 hex characters (``image_item.aeskey``)."""
    text = hex_key.strip()
    if not _HEX32.match(text):
        raise MediaRefused("AES key: expected 32 hex characters")
    register_secret(text)
    register_secret(text.lower())
    return bytes.fromhex(text)


def message_aes_key(key: bytes) -> str:
    """``media.aes_key`` as the official client sends it: base64 of the 32-char hex text."""
    _check_key(key)
    value = base64.b64encode(key.hex().encode("ascii")).decode("ascii")
    register_secret(value)
    return value


def decode_aes_key(aes_key: str) -> bytes:
    """Decode ``media.aes_key`` (§7.6): base64 of 16 raw bytes or of 32 hex characters.

    Standard or URL-safe alphabet, padding optional. Anything else raises
    :class:`~cdn.errors.MediaRefused`.
    """
    text = "".join(aes_key.split()).replace("-", "+").replace("_", "/").rstrip("=")
    if not text:
        raise MediaRefused("AES key is empty")
    register_secret(aes_key.strip())
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MediaRefused("AES key is not valid base64") from None
    if len(decoded) == BLOCK_SIZE:
        register_secret(decoded.hex())
        return decoded
    if len(decoded) == 2 * BLOCK_SIZE:
        try:
            as_text = decoded.decode("ascii")
        except UnicodeDecodeError:
            as_text = ""
        if _HEX32.match(as_text):
            return key_from_hex(as_text)
    raise MediaRefused(
        f"AES key must decode to 16 raw bytes or 32 hex characters, got {len(decoded)} bytes"
    )


def _cipher(key: bytes) -> Cipher[modes.ECB]:
    _check_key(key)
    return Cipher(algorithms.AES(key), modes.ECB())


class StreamEncryptor:
    """Incremental AES-128-ECB/PKCS7 encryption: ``update()`` per chunk, then ``finalize()``.

    Output of ``update`` is always whole blocks; ``finalize`` returns the last block (it
    carries the padding). The total equals :func:`ciphertext_size` of the input size.
    """

    def __init__(self, key: bytes) -> None:
        self._padder = padding.PKCS7(128).padder()
        self._enc = _cipher(key).encryptor()

    def update(self, data: bytes | memoryview) -> bytes:
        return self._enc.update(self._padder.update(data))

    def finalize(self) -> bytes:
        return self._enc.update(self._padder.finalize()) + self._enc.finalize()


class StreamDecryptor:
    """Incremental AES-128-ECB decryption that checks and strips PKCS7 padding.

    Raises :class:`~cdn.errors.CdnDownloadError` when the ciphertext is not whole blocks or
    the padding is wrong (a damaged file or the wrong key).
    """

    def __init__(self, key: bytes) -> None:
        self._dec = _cipher(key).decryptor()
        self._unpadder = padding.PKCS7(128).unpadder()
        self._seen = 0

    def update(self, data: bytes | memoryview) -> bytes:
        self._seen += len(data)
        return self._unpadder.update(self._dec.update(data))

    def finalize(self) -> bytes:
        if self._seen == 0 or self._seen % BLOCK_SIZE:
            raise CdnDownloadError(
                f"ciphertext of {self._seen} bytes is not a positive multiple of 16"
            )
        try:
            tail = self._unpadder.update(self._dec.finalize())
            return tail + self._unpadder.finalize()
        except ValueError:
            raise CdnDownloadError("bad PKCS7 padding (damaged data or wrong key)") from None


def encrypt(plaintext: bytes, key: bytes) -> bytes:
    """One-shot AES-128-ECB/PKCS7 encryption."""
    enc = StreamEncryptor(key)
    return enc.update(plaintext) + enc.finalize()


def decrypt(ciphertext: bytes, key: bytes) -> bytes:
    """One-shot AES-128-ECB decryption with the PKCS7 padding checked and removed."""
    dec = StreamDecryptor(key)
    return dec.update(ciphertext) + dec.finalize()


def iter_file_chunks(path: Path, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read ``path`` in chunks of at most ``chunk_size`` bytes."""
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def file_md5_and_size(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """Lowercase hex MD5 and byte size of a file, read in bounded chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    for chunk in iter_file_chunks(path, chunk_size):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
