"""Where a recipient's webhook may point: http or https, no credentials, and only public addresses.

A push endpoint is chosen by an API client, and the worker POSTs to it from inside our network, so
an endpoint aimed inward (the database's port, the admin, a cloud metadata service) would let any
client reach what only we can. The API refuses such a URL (400), and the worker checks it again at
send time: it resolves the name once, checks every address it resolves to, and connects to one of
those addresses (with the name in the Host header and in TLS, for SNI and the certificate check), so
no second DNS lookup, which a rebinding name could answer differently, decides where it goes.
`WEBHOOK_ALLOW_PRIVATE_NETWORKS=true` lifts the address check (development and tests); the
operator's own `PUSH_GATEWAY_URL` is trusted as configured and never comes here.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

SCHEMES = ("http", "https")

# Cloud metadata services answer credentials to anyone who can reach them. The IPv4 one is also
# link-local, and AWS's IPv6 one a unique local address; both are named here so the refusal says so.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# IPv6 prefixes that carry an IPv4 address inside: the embedded address decides.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(ValueError):
    """The URL may not be a webhook target. The message names the reason, never anything learned by
    connecting (nothing is connected to), so it cannot tell an open port from a closed one."""


class TargetUnresolved(Exception):
    """The name did not resolve now (no such name, or DNS unreachable): it may later."""


@dataclass(frozen=True)
class WebhookTarget:
    """A checked target: connect to one of `addresses`, and tell the server `host`."""

    url: Url
    scheme: str
    host: str  # as sent in the Host header and TLS (IDNA-encoded, no brackets)
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def request_uri(self) -> str:
        return self.url.request_uri

    @property
    def host_is_address(self) -> bool:
        return _as_address(self.host) is not None


Resolver = Callable[..., list]


def target_parse(url: str) -> Url:
    """Syntax only: http(s), a host, no user:password@. Raises TargetRefused."""
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError, UnicodeError):
        raise TargetRefused("not a valid URL") from None
    if parsed.scheme not in SCHEMES:
        raise TargetRefused("only http:// and https:// URLs are accepted")
    if parsed.auth is not None or "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        raise TargetRefused("credentials in the URL (user:password@) are not accepted")
    if not parsed.host:
        raise TargetRefused("the URL has no host")
    return parsed


def address_refusal(address: str) -> str | None:
    """Why this IP address may not be a webhook target, or None if it is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        embedded = ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None)
        if embedded is not None and address_refusal(str(embedded)):
            return f"an IPv6 address carrying {embedded}, {address_refusal(str(embedded))}"
    for reason, flagged in (
        ("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast), ("private", ip.is_private), ("reserved", ip.is_reserved),
    ):
        if flagged:
            return f"{'an' if reason[0] in 'aeiou' else 'a'} {reason} address"
    if not ip.is_global:
        return "not a public address"
    return None


def _as_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _resolve(host: str, port: int, resolver: Resolver) -> tuple[str, ...]:
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TargetUnresolved(f"could not resolve {host}: {exc}") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)))
    if not addresses:
        raise TargetUnresolved(f"could not resolve {host}")
    return addresses


def target_resolve(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> WebhookTarget:
    """Parse, resolve once and check every address. Raises TargetRefused or TargetUnresolved.

    Decimal, hex and octal forms (http://2130706433/, http://0x7f.1/) are whatever the resolver makes
    of them (127.0.0.1), so they are checked as the address the connection would really reach.
    """
    parsed = target_parse(url)
    host = parsed.host.strip("[]").rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise TargetRefused(f"{host} is a loopback name")  # RFC 6761: whatever the resolver says
    literal = _as_address(host)
    addresses = (literal,) if literal else _resolve(host, port, resolver or socket.getaddrinfo)
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason:
                raise TargetRefused(f"{host} is {reason}" if literal else f"{host} resolves to {address}, {reason}")
    return WebhookTarget(url=parsed, scheme=parsed.scheme, host=host, port=port, addresses=addresses)


# --- At the API: the same check, with lookups bounded in time and shared by a request's entries ----

def hosts_resolve(hosts: set[str], *, timeout: float, resolver: Resolver | None = None) -> dict[str, object]:
    """Look up many names at once (a bulk upsert may carry thousands of endpoints on a few hosts).
    Each answer is getaddrinfo's list or the exception it raised; a name not answered within
    `timeout` is absent (its endpoint is then accepted, and checked again at send time)."""
    if not hosts:
        return {}
    from concurrent.futures import ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="resolve")
    futures = {pool.submit(resolver or socket.getaddrinfo, host, None, type=socket.SOCK_STREAM): host for host in hosts}
    done, _ = wait(futures, timeout=timeout)
    pool.shutdown(wait=False, cancel_futures=True)
    return {futures[f]: (f.exception() or f.result()) for f in done}


def endpoint_refusal(url: str, *, allow_private: bool, resolved: dict[str, object]) -> str | None:
    """Why the API refuses this push endpoint, or None. `resolved` holds answers from hosts_resolve
    (a name absent from it, or that did not resolve, is accepted: the worker checks again)."""
    def lookup(host, port, **kwargs):
        answer = resolved.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_AGAIN, "not resolved in time")
        if isinstance(answer, BaseException):
            raise answer
        return answer

    try:
        target_resolve(url, allow_private=allow_private, resolver=lookup)
    except TargetRefused as exc:
        return str(exc)
    except TargetUnresolved:
        return None
    return None


def endpoint_host(url: str) -> str | None:
    """The name an endpoint's check would look up, if any (None for an IP address or a bad URL)."""
    try:
        host = target_parse(url).host.strip("[]").rstrip(".")
    except TargetRefused:
        return None
    return None if _as_address(host) else host
