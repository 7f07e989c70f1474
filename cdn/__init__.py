"""cdn: the media layer of ilinkbot (PROTOCOL.md §7).

Uploads files to the WeChat CDN (AES-128-ECB, streamed in bounded memory) and builds their
message items; picks, fetches and decrypts inbound media. Depends on :mod:`ilink` only.

Errors (all :class:`ilink.errors.IlinkError`)::

    CdnError                 base of every media-layer failure
    ├── CdnUploadError       the ciphertext did not reach the CDN (``retryable``, ``status``)
    ├── CdnDownloadError     fetching or decrypting inbound media failed
    └── MediaRefused         foreign URL, over the size cap, missing/malformed key
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ilinkbot.ilink.lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from .crypto import (
        StreamDecryptor,
        StreamEncryptor,
        ciphertext_size,
        decode_aes_key,
        decrypt,
        encrypt,
        file_md5_and_size,
        key_from_hex,
        message_aes_key,
        new_aes_key,
    )
    from .domains import DEFAULT_CDN_DOMAINS
    from .download import (
        DEFAULT_MAX_BYTES,
        DownloadedMedia,
        MediaRef,
        cdn_download_url,
        check_cdn_url,
        download_media,
        pick_media,
    )
    from .errors import CdnDownloadError, CdnError, CdnUploadError, MediaRefused
    from .mime import (
        MediaKind,
        kind_for_file_name,
        kind_for_mime,
        mime_from_file_name,
        sanitize_file_name,
    )
    from .upload import UPLOAD_ATTEMPTS, UploadedMedia, cdn_upload_url, upload_media

__all__ = [
    "DEFAULT_CDN_DOMAINS",
    "DEFAULT_MAX_BYTES",
    "UPLOAD_ATTEMPTS",
    "CdnDownloadError",
    "CdnError",
    "CdnUploadError",
    "DownloadedMedia",
    "MediaKind",
    "MediaRef",
    "MediaRefused",
    "StreamDecryptor",
    "StreamEncryptor",
    "UploadedMedia",
    "cdn_download_url",
    "cdn_upload_url",
    "check_cdn_url",
    "ciphertext_size",
    "decode_aes_key",
    "decrypt",
    "download_media",
    "encrypt",
    "file_md5_and_size",
    "key_from_hex",
    "kind_for_file_name",
    "kind_for_mime",
    "message_aes_key",
    "mime_from_file_name",
    "new_aes_key",
    "pick_media",
    "sanitize_file_name",
    "upload_media",
]

# Imported on first use: importing one module of the package (a constant, an error class)
# must not import the HTTP client, the crypto library and the rest.
_WHERE = {
    "StreamDecryptor": ".crypto",
    "StreamEncryptor": ".crypto",
    "ciphertext_size": ".crypto",
    "decode_aes_key": ".crypto",
    "decrypt": ".crypto",
    "encrypt": ".crypto",
    "file_md5_and_size": ".crypto",
    "key_from_hex": ".crypto",
    "message_aes_key": ".crypto",
    "new_aes_key": ".crypto",
    "DEFAULT_CDN_DOMAINS": ".domains",
    "DEFAULT_MAX_BYTES": ".download",
    "DownloadedMedia": ".download",
    "MediaRef": ".download",
    "cdn_download_url": ".download",
    "check_cdn_url": ".download",
    "download_media": ".download",
    "pick_media": ".download",
    "CdnDownloadError": ".errors",
    "CdnError": ".errors",
    "CdnUploadError": ".errors",
    "MediaRefused": ".errors",
    "MediaKind": ".mime",
    "kind_for_file_name": ".mime",
    "kind_for_mime": ".mime",
    "mime_from_file_name": ".mime",
    "sanitize_file_name": ".mime",
    "UPLOAD_ATTEMPTS": ".upload",
    "UploadedMedia": ".upload",
    "cdn_upload_url": ".upload",
    "upload_media": ".upload",
}


__getattr__, __dir__ = _lazy_exports(__name__, _WHERE, __all__)
