"""Trust boundary: who the client is, and what forwarding headers the upstream gets.

Rules (same as uvicorn's proxy_headers and nginx's real_ip with `real_ip_recursive on`):

- A peer that is not a configured trusted proxy is the client. Everything it says about other
  hops (X-Forwarded-For/-Proto/-Host, Forwarded, X-Real-IP) is ignored and overwritten: any
  client can write those headers.
- A trusted peer's X-Forwarded-For is walked right to left. Each hop was appended by the proxy to
  its right; we skip hops that are themselves trusted and stop at the first one that is not:
  that is the client. Hops further left were written by the client and prove nothing.
- An unparseable hop ends the walk at the last trusted address: a trusted proxy never writes
  garbage, so garbage means we are already in client-written territory.
- Several lines of one header are one list, in order (RFC 9110 5.3): HAProxy's `option
  forwardfor` adds its own X-Forwarded-For line after the client's, and reading only the
  first line would take the client's word for its address.
- A forwarded host is used only when it is a valid authority (proxy/inbound.py): it goes
  into Forwarded's quoted host= value.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping

from multidict import MultiMapping

from .exchange import Client
from .inbound import header_list, valid_authority

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDING_HEADERS = (
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Forwarded",
    "X-Real-IP",
)


def _parse_hop(text: str) -> IPAddress | None:
    """An address from an X-Forwarded-For entry: '1.2.3.4', '1.2.3.4:567', '[::1]:80', '::1'."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has two or more colons
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted(address: IPAddress | None, trusted: tuple[IPNetwork, ...]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in net for net in trusted)


def client_key(ip: str, headers: Mapping[str, str]) -> str:
    """The client store's key: the address and a fingerprint of the program behind it, from
    what one browser or player sends alike on every request (User-Agent, Accept-Language,
    Sec-CH-UA; recorded so in tests/fixtures/clients/), not from what changes by request kind
    (Accept, Accept-Encoding). Households, offices, carriers' CGNAT and VPNs put many people
    behind one address: each is a client of its own here. The fingerprint alone ties nobody
    together: it is never a key without its address."""
    digest = hashlib.blake2b(digest_size=6)
    for name in ("User-Agent", "Accept-Language", "Sec-CH-UA"):
        digest.update(headers.get(name, "").encode("utf-8", "surrogateescape") + b"\x00")
    return f"c:{ip}/{digest.hexdigest()}"


def resolve_client(
    peer: str, headers: MultiMapping[str], trusted: tuple[IPNetwork, ...], scheme: str
) -> Client:
    """Decide the client address, scheme and host from the socket peer and, if trusted, headers."""
    host = headers.get("Host", "")
    if not trusted or not is_trusted(_parse_hop(peer), trusted):
        return Client(ip=peer, peer=peer, via_trusted_proxy=False, scheme=scheme, host=host,
                      key=client_key(peer, headers))

    client_ip = peer
    for hop in reversed(header_list(headers, "X-Forwarded-For")):
        addr = _parse_hop(hop)
        if addr is None:
            break
        client_ip = str(addr)
        if not is_trusted(addr, trusted):
            break
    protos = header_list(headers, "X-Forwarded-Proto")
    proto = protos[-1].lower() if protos else ""
    hosts = header_list(headers, "X-Forwarded-Host")
    fwd_host = hosts[-1] if hosts and valid_authority(hosts[-1]) else ""
    return Client(
        ip=client_ip,
        peer=peer,
        via_trusted_proxy=True,
        scheme=proto if proto in ("http", "https") else scheme,
        host=fwd_host or host,
        key=client_key(client_ip, headers),
    )


def _forwarded_node(address: str) -> str:
    # RFC 7239 section 6: IPv6 nodes are bracketed and the value quoted.
    return f'"[{address}]"' if ":" in address else address


def forwarding_headers(client: Client, incoming: MultiMapping[str]) -> dict[str, str]:
    """The forwarding headers to send upstream for this client.

    Behind a trusted proxy the chain it sent is extended with that proxy's address; from an
    untrusted peer the chain starts afresh with the peer.
    """
    own = f"for={_forwarded_node(client.peer)};proto={client.scheme}"
    if client.host:
        own += f';host="{client.host}"'
    if client.via_trusted_proxy:
        xff = ", ".join(header_list(incoming, "X-Forwarded-For"))
        fwd = ", ".join(header_list(incoming, "Forwarded"))
        return {
            "X-Forwarded-For": f"{xff}, {client.peer}" if xff else client.peer,
            "X-Forwarded-Proto": client.scheme,
            "X-Forwarded-Host": client.host,
            "Forwarded": f"{fwd}, {own}" if fwd else own,
            "X-Real-IP": client.ip,
        }
    return {
        "X-Forwarded-For": client.peer,
        "X-Forwarded-Proto": client.scheme,
        "X-Forwarded-Host": client.host,
        "Forwarded": own,
        "X-Real-IP": client.ip,
    }
