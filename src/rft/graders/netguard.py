"""Outbound-address policy for graders that call URLs from a spec (`endpoint`): no SSRF into the host's network.

What: `HostAllowlist.parse(entries)` reads an explicit allowlist (hostnames, IP addresses, CIDR blocks; the job's
`rft.network.allow_private_hosts`). `blocked_reason(ip)` says why an address is off limits: loopback,
link-local (169.254/16, fe80::/10, cloud metadata lives there), private (10/8, 172.16/12, 192.168/16, fc00::/7),
unspecified, multicast, reserved, or otherwise not globally routable (100.64/10, documentation ranges); an
IPv4-mapped, 6to4 or Teredo IPv6 address is judged by the IPv4 address inside it. `literal_host_problem(url,
allow)` is the validation-time check (the host is an IP literal or `localhost`); `resolve_checked(host, port,
allow)` is the connect-time check: it resolves the name once, refuses it when any address it resolves to is off
limits, and returns the checked addresses, which the caller connects to (never resolving the name again, so a
DNS answer that changes between the check and the connection, "DNS rebinding", cannot reach a refused address).

Allowlist semantics: a hostname entry trusts that name whatever it resolves to (use it for an internal grader
service); an IP or CIDR entry allows addresses inside it, whatever name led there. Public addresses are always
allowed. Names are compared case-insensitively, without a trailing dot.

Simplified / not protected: HTTP proxies from the environment are not used by the endpoint grader (a proxy would
hide the real destination); the policy covers the addresses rft connects to, not what an allowed service does
next. How to run: `python -c "from rft.graders.netguard import blocked_reason; import ipaddress;
print(blocked_reason(ipaddress.ip_address('169.254.169.254')))"`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from rft.errors import RftError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*$")
ALLOWLIST_FIELD = "rft.network.allow_private_hosts"


class RefusedAddress(Exception):
    """A URL's host is (or resolves to) an address the policy refuses."""


def _norm_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True)
class HostAllowlist:
    """Hostnames and networks that may be reached although they are private, loopback or link-local."""

    hostnames: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries, field: str = ALLOWLIST_FIELD) -> "HostAllowlist":
        """Entries are hostnames (`grader.internal`, `localhost`), IPs (`127.0.0.1`, `::1`) or CIDR blocks
        (`10.0.0.0/8`); anything else (a URL, a port, a bad prefix) raises RftError naming the entry."""
        if entries is None:
            return cls()
        if isinstance(entries, str) or not isinstance(entries, (list, tuple, set, frozenset)):
            raise RftError(f"{field} must be a list of hostnames, IP addresses or CIDR blocks, got {type(entries).__name__}")
        names, nets = set(), []
        for e in entries:
            if not isinstance(e, str) or not e.strip():
                raise RftError(f"{field}: {e!r} is not a hostname, IP address or CIDR block")
            text = e.strip()
            try:
                nets.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in text or not _HOSTNAME.match(_norm_host(text)):
                raise RftError(f"{field}: {text!r} is not a hostname, IP address or CIDR block "
                               "(examples: localhost, grader.internal, 127.0.0.1, ::1, 10.0.0.0/8)")
            names.add(_norm_host(text))
        return cls(frozenset(names), tuple(nets))

    def allows_host(self, host: str) -> bool:
        return _norm_host(host) in self.hostnames

    def allows_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def __bool__(self) -> bool:
        return bool(self.hostnames or self.networks)


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` is off limits for outbound grader traffic (None: a public address)."""
    inner = _embedded_v4(ip)
    if inner is not None:
        why = blocked_reason(inner)
        return f"{why} (inside {ip})" if why else None
    for why, attr in (("a loopback", "is_loopback"), ("a link-local", "is_link_local"), ("an unspecified", "is_unspecified"),
                      ("a multicast", "is_multicast"), ("a reserved", "is_reserved"), ("a private", "is_private")):
        if getattr(ip, attr):
            return f"{why} address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refusal(host: str, ip: IPAddress | None, why: str) -> str:
    shown = host if ip is None or str(ip) == host else f"{host} ({ip})"
    return (f"{shown} is {why}; endpoint graders may not reach loopback, link-local or private addresses unless "
            f"the job allows it (add '{host}' to {ALLOWLIST_FIELD}, or pass --allow-private-host {host})")


def literal_host_problem(url: str, allow: HostAllowlist) -> str | None:
    """Validation time: a problem text when the URL's host is an IP literal or localhost the policy refuses.
    Names that need DNS are checked when the grader connects (`resolve_checked`)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None  # the URL check reports it
    if not host or allow.allows_host(host):
        return None
    h = _norm_host(host)
    if h == "localhost" or h.endswith(".localhost"):  # RFC 6761: always loopback
        return _refusal(host, None, "a loopback address")
    ip = _literal_ip(h)
    if ip is not None and not allow.allows_ip(ip):
        why = blocked_reason(ip)
        if why:
            return _refusal(host, ip, why)
    return None


def getaddrinfo(host: str, port: int):
    """The resolver (tests replace it to make a name resolve to loopback)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def resolve_checked(host: str, port: int, allow: HostAllowlist) -> list[tuple[int, tuple]]:
    """Resolve `host` once and return [(family, sockaddr)] to connect to; raises RefusedAddress when any address
    it resolves to is off limits (and neither the name nor the address is allowlisted), OSError when it does not
    resolve."""
    trusted_name = allow.allows_host(host)
    h = _norm_host(host)
    if not trusted_name and (h == "localhost" or h.endswith(".localhost")):
        raise RefusedAddress(_refusal(host, None, "a loopback address"))
    out = []
    for family, _type, _proto, _canon, sockaddr in getaddrinfo(host, port):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not trusted_name and not allow.allows_ip(ip):
            why = blocked_reason(ip)
            if why:
                raise RefusedAddress(_refusal(host, ip, why))
        out.append((family, sockaddr))
    if not out:
        raise OSError(f"{host} did not resolve to an IPv4 or IPv6 address")
    return out


def connect_checked(host: str, port: int, allow: HostAllowlist, timeout: float) -> socket.socket:
    """A TCP connection to the first checked address of `host` that answers (see `resolve_checked`)."""
    last: OSError | None = None
    for family, sockaddr in resolve_checked(host, port, allow):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last or OSError(f"could not connect to {host}:{port}")


__all__ = ["ALLOWLIST_FIELD", "HostAllowlist", "RefusedAddress", "blocked_reason", "connect_checked", "getaddrinfo",
           "literal_host_problem", "resolve_checked"]
