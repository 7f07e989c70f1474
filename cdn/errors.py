"""Errors of the media layer (PROTOCOL.md §7).

::

    ilink.errors.IlinkError
    └── CdnError                 base of every media-layer failure
        ├── CdnUploadError       the ciphertext did not reach the CDN
        │                        (``retryable``: a later send may succeed; ``status``: last HTTP
        │                        status or ``None`` for a network error; ``attempts`` made)
        ├── CdnDownloadError     the media could not be fetched or decrypted
        │                        (non-2xx, network error, ciphertext that is not whole blocks,
        │                        bad PKCS7 padding)
        └── MediaRefused         refused by policy before or while fetching: a URL neither on
                                 the configured CDN origin nor https on an allowed CDN domain,
                                 more than ``max_bytes``, a missing or malformed AES key

Errors of ``getuploadurl`` itself are the :mod:`ilink.errors` ones raised by
:meth:`ilink.client.IlinkClient.get_upload_url` and pass through unchanged.
"""

from __future__ import annotations

from ilinkbot.ilink.errors import IlinkError

__all__ = ["CdnDownloadError", "CdnError", "CdnUploadError", "MediaRefused"]


class CdnError(IlinkError):
    """Base class of the errors raised by :mod:`cdn`."""


class CdnUploadError(CdnError):
    """Uploading the ciphertext to the CDN failed.

    ``retryable`` is ``False`` for a 4xx answer (the CDN refused this upload) and for a source
    file that changed while it was being sent; ``True`` when all attempts hit 5xx answers,
    network errors or answers without ``x-encrypted-param``.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, endpoint="cdn_upload")
        self.retryable = retryable
        self.status = status
        self.attempts = attempts


class CdnDownloadError(CdnError):
    """Fetching or decrypting inbound media failed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message, endpoint="cdn_download")
        self.status = status
        self.retryable = retryable


class MediaRefused(CdnError):
    """The media was refused on purpose (hostile URL, too large, unusable key)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, endpoint="cdn_download")
