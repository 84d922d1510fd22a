"""Which webhook URLs the server may call: no loopback, private, link-local or reserved targets.

A tenant must not make the server reach what only the server can reach (the
metadata service, the database, the admin port): that is server-side request
forgery. Every address the host resolves to must be public, checked when the
webhook is registered and again before each attempt (a name can be re-pointed
later). ``RAREFIT_WEBHOOKS_ALLOW_PRIVATE=true`` lets an operator allow them,
e.g. for receivers inside the same network.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

SCHEMES = ("http", "https")


def target_problem(url: str, *, allow_private: bool) -> str | None:
    """Why the server must not POST to ``url``, or None when it may."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in SCHEMES:
        return f"scheme must be one of {list(SCHEMES)}, got {parts.scheme!r}"
    if not parts.hostname:
        return "the URL has no host"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as exc:
        return f"host {parts.hostname!r} does not resolve ({exc})"
    if allow_private:
        return None
    for address in sorted(addresses):
        if not _public(address):
            return (
                f"host {parts.hostname!r} resolves to {address}, a loopback, private, link-local or reserved "
                "address; the operator can allow those with RAREFIT_WEBHOOKS_ALLOW_PRIVATE"
            )
    return None


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
