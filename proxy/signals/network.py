"""Network facts about the client address: ASN and organisation from a MaxMind-format database
(GeoLite2-ASN, DB-IP ASN lite or IPinfo lite, .mmdb), and whether that ASN is a hosting
provider (rules/networks/datacenters.yaml).

A missing or unreadable database is an ordinary deployment state, not a crash: one warning at
start, and the signal is off (ASN 0, no organisation) until the path is fixed.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, NamedTuple

import maxminddb

from ..logs import log_event

log = logging.getLogger("sonicshield.network")


class NetworkInfo(NamedTuple):
    asn: int = 0
    org: str = ""


UNKNOWN = NetworkInfo()


class AsnDatabase:
    def __init__(self, path: Path | None, cache_size: int = 65536) -> None:
        self.path = path
        self._reader: Any = None
        if path is not None:
            try:
                # MODE_AUTO picks the C extension; MODE_MEMORY would silently pick the pure-Python
                # reader, 20x slower (DESIGN.md).
                self._reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
            except FileNotFoundError:
                log_event(log, logging.WARNING, "asn-database-missing", path=str(path),
                          effect="ASN and datacenter signals are off")
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                log_event(log, logging.WARNING, "asn-database-unreadable", path=str(path),
                          error=str(exc), effect="ASN and datacenter signals are off")
        self.lookup = functools.lru_cache(maxsize=cache_size)(self._lookup)

    @property
    def available(self) -> bool:
        return self._reader is not None

    def _lookup(self, ip: str) -> NetworkInfo:
        if self._reader is None:
            return UNKNOWN
        try:
            record = self._reader.get(ip)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return UNKNOWN
        if not isinstance(record, dict):
            return UNKNOWN
        # GeoLite2-ASN / DB-IP: autonomous_system_*; IPinfo lite: asn "AS123", as_name
        asn = record.get("autonomous_system_number") or record.get("asn") or 0
        if isinstance(asn, str):
            asn = int(asn[2:]) if asn.upper().startswith("AS") and asn[2:].isdigit() else 0
        org = record.get("autonomous_system_organization") or record.get("as_name") or ""
        return NetworkInfo(int(asn), str(org))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
