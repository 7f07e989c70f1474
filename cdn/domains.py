"""Where inbound media may come from, besides ``cdn_base_url`` (constants only: the
configuration reads them on every command)."""

__all__ = ["DEFAULT_CDN_DOMAINS"]

#: Domain families Tencent's media CDN answers from: ``full_url`` is fetched as given (like the
#: official client) when it is ``https`` on one of them or any of their subdomains.
DEFAULT_CDN_DOMAINS: tuple[str, ...] = ("qq.com", "qpic.cn", "wechat.com")
