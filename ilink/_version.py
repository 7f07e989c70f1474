"""The ilinkbot version (also the default ``bot_agent`` product version)."""

__version__ = "0.1.0"

#: The official plugin version whose wire behaviour this package mirrors.
DEFAULT_CHANNEL_VERSION = "2.4.9"
