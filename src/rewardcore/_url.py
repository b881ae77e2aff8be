"""Backend URLs: parsed once (`BackendURL`: parts, typed parameters, unknown ones refused),
and shown safely: wherever a URL is printed, logged, put in an error or exported as a metric
label, it goes through `redact_url` first."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

from .errors import ConfigError

#: Query parameters whose value is a secret, or says who holds one (redis-py reads
#: `password` and `username` from the query as well as from the userinfo).
_SECRET_PARAM = re.compile(r"pass|pwd|user|token|secret|key|auth|cred|sig", re.IGNORECASE)
MASK = "***"


def redact_url(url: str) -> str:
    """`url` with its userinfo and any secret-looking query parameter replaced by ***.

    Never raises: text that does not parse as a URL is masked after its scheme."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs],
                              safe="*", quote_via=quote)
        if netloc == parts.netloc and query == parts.query:
            return url
        # by hand: urlunsplit drops the empty host of memory:///dir
        head = f"{parts.scheme}://{netloc}" if "//" in url else f"{parts.scheme}:"
        return head + parts.path + (f"?{query}" if query else "") + (
            f"#{parts.fragment}" if parts.fragment else "")
    except ValueError:
        scheme, sep, _ = url.partition("://")
        return f"{scheme}{sep}{MASK}" if sep else MASK


class BackendURL:
    """A backend URL parsed once: its parts, its query as a dict, typed parameters, and a
    ConfigError naming the URL (redacted) for anything wrong in it."""

    __slots__ = ("url", "scheme", "netloc", "path", "query")

    def __init__(self, url: str, known: tuple[str, ...] | None = None) -> None:
        self.url = url
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigError(f"backend URL {redact_url(url)!r}: {exc}") from None
        self.scheme = parts.scheme
        self.netloc = parts.netloc
        self.path = parts.path
        self.query = parse_qs(parts.query, keep_blank_values=True)
        if known is not None:
            unknown = sorted(set(self.query) - set(known))
            if unknown:
                names = ", ".join(repr(k) for k in unknown)
                raise self.error(f"unknown parameter{'s' if len(unknown) > 1 else ''} "
                                 f"{names}; {self.scheme}:// takes "
                                 f"{', '.join(sorted(known)) or 'none'}")

    @property
    def has_path(self) -> bool:
        return self.path not in ("", "/")

    def error(self, what: str) -> ConfigError:
        return ConfigError(f"backend URL {redact_url(self.url)!r}: {what}")

    def text(self, name: str, default: str | None = None) -> str | None:
        """The parameter's last value, or `default`."""
        values = self.query.get(name)
        return values[-1] if values else default

    def int(self, name: str, default: int, minimum: int = 0) -> int:
        """A whole-number parameter, at least `minimum`."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.error(f"{name} must be an integer, not {raw!r}") from None
        if value < minimum:
            raise self.error(f"{name} must be >= {minimum}")
        return value
