"""Where a webhook may be sent: public addresses only, unless the deployment allows others.

Any API user picks a job's `webhook_url`, and the service POSTs to it from inside
the deployment's network. Without a check, a user could make the server call what
only the server can reach (cloud metadata at 169.254.169.254, an admin port on
localhost, other hosts of the private network): server-side request forgery. So
the host is resolved before every attempt and each address it resolves to must be
a global one. A deployment whose receivers live on its own network (or a test on
loopback) sets APLSERVE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES.

Checked at POST /v1/jobs too, for literal addresses and `localhost`, so that a
refused URL is a 422 at once rather than a webhook that silently never arrives.
The check resolves the name and the HTTP client resolves it again when it connects;
a name that changes its answer in between (DNS rebinding) is not covered.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _host(parts: SplitResult) -> str:
    return (parts.hostname or "").rstrip(".").lower()


def literal_refusal(url: str) -> str | None:
    """Why `url` names a non-public host without any lookup (an IP literal or localhost), else None."""
    return _literal_refusal(_host(urlsplit(url)))


def _literal_refusal(host: str) -> str | None:
    if not host:
        return "the URL has no host"
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return f"'{host}' is this server itself"
    try:
        public = _is_public(host)
    except ValueError:
        return None  # a name: resolved when the call is made
    return None if public else f"{host} is not a public address"


def refusal(url: str) -> str | None:
    """Why `url` must not be called (its host is or resolves to a non-public address), else None."""
    parts = urlsplit(url)
    host = _host(parts)
    reason = _literal_refusal(host)
    if reason is not None:
        return reason
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return None  # unresolvable: the attempt fails (and is retried) like any unreachable receiver
    private = sorted(address for address in addresses if not _is_public(str(address)))
    if private:
        return f"'{host}' resolves to {', '.join(private)}, not a public address"
    return None
