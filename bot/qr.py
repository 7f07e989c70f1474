"""QR codes for the login: a compact terminal rendering and a PNG file.

The terminal rendering packs two module rows into one text row with the half-block
characters ``▀ ▄ █``. Light modules are drawn as blocks by default (``invert=True``), which
is what a dark terminal background needs; pass ``invert=False`` for a light background.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import qrcode
from qrcode.constants import ERROR_CORRECT_M

__all__ = ["qr_matrix", "render_terminal", "write_png"]

_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_matrix(data: str, *, border: int = 2) -> list[list[bool]]:
    """The module matrix of ``data`` (``True`` = dark), quiet zone included."""
    code = qrcode.QRCode(border=border, error_correction=ERROR_CORRECT_M)
    code.add_data(data)
    code.make(fit=True)
    return [[bool(cell) for cell in row] for row in code.get_matrix()]


def render_terminal(data: str, *, invert: bool = True, border: int = 2) -> str:
    """``data`` as a QR code drawn with half blocks (one text row per two module rows)."""
    matrix = qr_matrix(data, border=border)
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))
    lines = []
    for top, bottom in zip(matrix[0::2], matrix[1::2], strict=True):
        chars = []
        for t, b in zip(top, bottom, strict=True):
            # Draw the modules that should look "ink" on this terminal as blocks.
            chars.append(_BLOCKS[(t != invert, b != invert)])
        lines.append("".join(chars))
    return "\n".join(lines) + "\n"


def write_png(data: str, path: str | Path, *, box_size: int = 8, border: int = 4) -> Path:
    """Write ``data`` as a PNG QR code to ``path`` (atomically); return the absolute path."""
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    code = qrcode.QRCode(border=border, box_size=box_size, error_correction=ERROR_CORRECT_M)
    code.add_data(data)
    code.make(fit=True)
    image = code.make_image()
    fd, tmp = tempfile.mkstemp(prefix=".qr-", suffix=".png", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
