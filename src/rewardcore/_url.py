"""URLs as rewardcore shows them: wherever a URL is printed, logged, put in an error or
exported as a metric label, it goes through `redact_url` first."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

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
