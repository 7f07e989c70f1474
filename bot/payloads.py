"""What one outbox row sends, as dataclasses. A row stores its payload as JSON, in the shape
``to_json`` gives (unchanged since the first schema, so old rows read the same):

* text: ``{"item": {"type": 1, "text_item": {"text": ...}}, "run_id": ...}``
* media: ``{"media": {"path", "kind", "file_name", "upload"}, "run_id": ...}``; ``upload`` is
  set once the file is on the CDN, so that a retried send does not upload it again
* any other message item, as the server takes it: ``{"item": {...}, "run_id": ...}``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .textsplit import split_text

__all__ = [
    "ItemPayload",
    "MediaPayload",
    "Payload",
    "TextPayload",
    "media_payload",
    "payload_from_json",
    "text_payloads",
]


@dataclass(frozen=True)
class TextPayload:
    text: str
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"item": {"type": 1, "text_item": {"text": self.text}}, "run_id": self.run_id}


@dataclass(frozen=True)
class MediaPayload:
    path: str
    kind: str | None = None
    file_name: str | None = None
    upload: dict[str, Any] | None = None
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        media = {
            "path": self.path,
            "kind": self.kind,
            "file_name": self.file_name,
            "upload": self.upload,
        }
        return {"media": media, "run_id": self.run_id}

    def uploaded(self, upload: dict[str, Any]) -> MediaPayload:
        return replace(self, upload=upload)


@dataclass(frozen=True)
class ItemPayload:
    item: dict[str, Any]
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "run_id": self.run_id}


Payload = TextPayload | MediaPayload | ItemPayload


def payload_from_json(data: Mapping[str, Any] | None) -> Payload:
    """The payload of a stored row; ``ValueError`` for a shape no version ever wrote."""
    data = data or {}
    run_id = data.get("run_id")
    media = data.get("media")
    if isinstance(media, Mapping) and isinstance(media.get("path"), str):
        return MediaPayload(
            path=media["path"],
            kind=media.get("kind"),
            file_name=media.get("file_name"),
            upload=media.get("upload"),
            run_id=run_id,
        )
    item = data.get("item")
    if isinstance(item, Mapping):
        text = (item.get("text_item") or {}).get("text")
        if item.get("type") == 1 and isinstance(text, str) and set(item) == {"type", "text_item"}:
            return TextPayload(text, run_id)
        return ItemPayload(dict(item), run_id)
    raise ValueError("outbox payload has neither an item nor media")


def text_payloads(
    text: str, *, title: str | None = None, chunk_size: int = 2000, run_id: str | None = None
) -> list[TextPayload]:
    """One payload per chunk of ``text`` (with the title as its first line)."""
    body = f"{title}\n\n{text}" if title and text else (title or text)
    if not body.strip():
        raise ValueError("nothing to send: the text is empty")
    return [TextPayload(chunk, run_id) for chunk in split_text(body, chunk_size)]


def media_payload(
    path: Path | str,
    *,
    kind: str | None = None,
    file_name: str | None = None,
    run_id: str | None = None,
) -> MediaPayload:
    """A payload that uploads ``path`` when first sent (the upload result is kept)."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return MediaPayload(str(p), kind=kind, file_name=file_name, run_id=run_id)
