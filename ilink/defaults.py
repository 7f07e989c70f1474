"""The real server's addresses: the defaults of ``base_url`` and ``cdn_base_url``.

A module of constants only, so that reading them (the configuration does, on every command)
imports nothing else."""

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_CDN_BASE_URL"]

DEFAULT_BASE_URL = "https://ilinkai.weixin.qq.com"
DEFAULT_CDN_BASE_URL = "https://novac2c.cdn.weixin.qq.com/c2c"
