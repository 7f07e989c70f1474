"""A strict emulator of Tencent's ilink bot API and CDN, for tests and offline use.

``Sandbox`` holds the state and the rules; ``sb.transport()`` serves it in-process to
httpx, ``SandboxServer`` serves it over real HTTP in a background thread, and
``run_server`` (``python -m ilinkbot.ilink.sandbox``) runs it until interrupted.
"""

from __future__ import annotations

from .core import Sandbox
from .model import (
    FAULT_ENDPOINTS,
    FAULT_KINDS,
    ImageKeyForm,
    SandboxError,
    SandboxRequest,
    SandboxResponse,
)
from .server import SandboxServer, run_server
from .transport import SandboxTransport

__all__ = [
    "FAULT_ENDPOINTS",
    "FAULT_KINDS",
    "ImageKeyForm",
    "Sandbox",
    "SandboxError",
    "SandboxRequest",
    "SandboxResponse",
    "SandboxServer",
    "SandboxTransport",
    "run_server",
]
