"""Address pinning: a download connects to the very address that was checked.

The fetcher resolves each host once (`resolve_within`), checks every address
(`hostrules`), and then sends the request to a URL holding the checked
address, with the original Host header. `PinnedAdapter` makes TLS use the
Host header's name for SNI and certificate checks, so DNS cannot change
between the check and the connection and HTTPS still verifies the real name.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from http.cookiejar import DefaultCookiePolicy
from typing import Any, cast

import requests
from requests.adapters import HTTPAdapter

from receiver.errors import FetchError
from receiver.media.deadline import WatchedHTTPPool, WatchedHTTPSPool

__all__ = ["PinnedAdapter", "Resolver", "pinned_session", "resolve_within", "system_resolver"]

Resolver = Callable[[str, int], list[str]]
"""Maps (host name, port) to IP address strings; the default is `system_resolver`."""


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve `host` with the operating system, returning unique addresses in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


def resolve_within(resolver: Resolver, host: str, port: int, limit: float) -> list[str]:
    """`resolver(host, port)` given at most `limit` seconds.

    Raises a retryable FetchError when the lookup fails or takes longer.
    """
    # getaddrinfo has no timeout of its own, so it runs in a separate thread
    # that is abandoned if it takes too long.
    box: list[list[str] | Exception] = []

    def run() -> None:
        try:
            box.append(list(resolver(host, port)))
        except Exception as exc:
            box.append(exc)

    worker = threading.Thread(target=run, name="mms-resolve", daemon=True)
    worker.start()
    worker.join(limit)
    if not box:
        raise FetchError(f"looking up {host} took longer than {limit:.1f}s", retryable=True)
    outcome = box[0]
    if isinstance(outcome, Exception):
        cause = getattr(outcome, "strerror", None) or type(outcome).__name__
        raise FetchError(f"cannot resolve {host} ({cause})", retryable=True)
    return outcome


def pinned_session(user_agent: str, ca_bundle: str | None = None) -> requests.Session:
    """A requests.Session that sends pinned requests and nothing of the environment's."""
    session = requests.Session()
    # No proxies (they would resolve names themselves, defeating the
    # pinning) and no ~/.netrc credentials.
    session.trust_env = False
    # Media downloads need no cookies, and one host's cookie must not
    # follow us to another host that shares its address.
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.headers.update(
        {
            "User-Agent": user_agent,
            "Accept": "*/*",
            # Media is stored byte-exact, so ask for the bytes as they are.
            "Accept-Encoding": "identity",
        }
    )
    if ca_bundle:
        session.verify = ca_bundle
    adapter = PinnedAdapter(pool_connections=8, pool_maxsize=2, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class PinnedAdapter(HTTPAdapter):
    """Connects to the IP address in the URL; TLS uses the Host header's name.

    The fetcher puts the checked address in the URL, so the connection cannot
    go anywhere else; the pool key includes the TLS name, so a pooled
    connection is only reused for the same address and the same name. (With
    requests older than 2.32 the TLS name hook is not called and HTTPS fails
    certificate checks: it fails closed.) Its pools obey the download deadline.
    """

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": WatchedHTTPPool,
            "https": WatchedHTTPSPool,
        }

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        # requests types these as closed TypedDicts; urllib3 accepts more keys.
        params = cast(dict[str, Any], host_params)
        kwargs = cast(dict[str, Any], pool_kwargs)
        if params.get("scheme") == "https":
            name = tls_name(request.headers.get("Host"))
            if name is not None:
                kwargs["server_hostname"] = name
        return params, kwargs


def tls_name(host_header: str | bytes | None) -> str | None:
    """The host name in a Host header, or None for an IP address (no SNI for those)."""
    if not host_header:
        return None
    text = host_header.decode("ascii") if isinstance(host_header, bytes) else host_header
    if text.startswith("["):
        return None
    name = text.rsplit(":", 1)[0] if ":" in text else text
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None
