"""MIME routing (§7.8) and file-name sanitising."""

from __future__ import annotations

import pytest

from ilinkbot.cdn import MediaKind, kind_for_file_name, mime_from_file_name, sanitize_file_name
from ilinkbot.cdn.mime import (
    extension_for_mime,
    extension_from_content_type_or_url,
    sniff_image_mime,
)


@pytest.mark.parametrize(
    ("name", "mime", "kind"),
    [
        ("a.png", "image/png", MediaKind.IMAGE),
        ("A.JPG", "image/jpeg", MediaKind.IMAGE),
        ("x.jpeg", "image/jpeg", MediaKind.IMAGE),
        ("x.webp", "image/webp", MediaKind.IMAGE),
        ("clip.MP4", "video/mp4", MediaKind.VIDEO),
        ("clip.mkv", "video/x-matroska", MediaKind.VIDEO),
        ("song.mp3", "audio/mpeg", MediaKind.FILE),  # audio goes as a FILE
        ("v.wav", "audio/wav", MediaKind.FILE),
        ("doc.pdf", "application/pdf", MediaKind.FILE),
        ("a.tar.gz", "application/gzip", MediaKind.FILE),
        ("noext", "application/octet-stream", MediaKind.FILE),
        (".png", "application/octet-stream", MediaKind.FILE),  # a hidden file, no extension
        ("dir.png/readme", "application/octet-stream", MediaKind.FILE),
        ("weird.heic", "application/octet-stream", MediaKind.FILE),
    ],
)
def test_routing(name: str, mime: str, kind: MediaKind) -> None:
    assert mime_from_file_name(name) == mime
    assert kind_for_file_name(name) is kind


def test_reverse_lookup() -> None:
    assert extension_for_mime("image/jpg") == ".jpg"
    assert extension_for_mime("Image/PNG; charset=x") == ".png"
    assert extension_for_mime("application/x-nope") == ".bin"
    assert extension_from_content_type_or_url(None, "https://h/a/b.PDF?x=1") == ".pdf"
    assert extension_from_content_type_or_url("text/csv", "https://h/a.pdf") == ".csv"
    assert extension_from_content_type_or_url("x/y", "https://h/a.exe") == ".bin"


def test_sniff() -> None:
    assert sniff_image_mime(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_image_mime(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_image_mime(b"GIF89a") == "image/gif"
    assert sniff_image_mime(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff_image_mime(b"hello") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("a/b", "b"),
        ("a/", "file"),
        ("..", "file"),
        ("...", "file"),
        ("", "file"),
        (None, "file"),
        ("   ", "file"),
        ("\x00\x01evil\x1b[31m.txt", "evil[31m.txt"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("gpj\u202e.exe", "gpj.exe"),  # bidi override dropped
        (".bashrc", "bashrc"),
        ("name.", "name"),
        ('a<b>c:"d|e?f*.txt', "a_b_c__d_e_f_.txt"),
        ("CON.txt", "_CON.txt"),
        ("报告 2024.docx", "报告 2024.docx"),
    ],
)
def test_sanitize_file_name(raw: str | None, expected: str) -> None:
    assert sanitize_file_name(raw) == expected


def test_sanitize_bounds_length_and_keeps_extension() -> None:
    out = sanitize_file_name("x" * 500 + ".pdf")
    assert len(out) <= 120 and out.endswith(".pdf") and out.startswith("xxx")
    out = sanitize_file_name("y" * 500)
    assert out == "y" * 120


def test_sanitize_default() -> None:
    assert sanitize_file_name("/", default="image.jpg") == "image.jpg"


@pytest.mark.parametrize("raw", ["../../etc/passwd", "a/b", "\x00", "", "..", "x\\..\\y", "/" * 9])
def test_sanitized_names_are_plain_components(raw: str) -> None:
    out = sanitize_file_name(raw)
    assert out and "/" not in out and "\\" not in out and out not in {".", ".."}
    assert not any(ord(c) < 32 or ord(c) == 127 for c in out)


def test_sanitize_bounds_utf8_bytes_too() -> None:
    out = sanitize_file_name("报" * 116 + ".pdf")  # 120 characters, 352 bytes
    assert len(out.encode()) <= 200 and out.endswith(".pdf") and set(out[:-4]) == {"报"}
