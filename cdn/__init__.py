"""cdn: the media layer of ilinkbot (PROTOCOL.md §7).

Uploads files to the WeChat CDN (AES-128-ECB, streamed in bounded memory) and builds their
message items; picks, fetches and decrypts inbound media. Depends on :mod:`ilink` only.

Errors (all :class:`ilink.errors.IlinkError`)::

    CdnError                 base of every media-layer failure
    ├── CdnUploadError       the ciphertext did not reach the CDN (``retryable``, ``status``)
    ├── CdnDownloadError     fetching or decrypting inbound media failed
    └── MediaRefused         foreign URL, over the size cap, missing/malformed key
"""

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
from .download import (
    DEFAULT_CDN_DOMAINS,
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
