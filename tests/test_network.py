"""Network signals: ASN and organisation from a MaxMind-format database the test builds."""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from proxy.exchange import Client, Exchange
from proxy.rules import LiveRules, load_rules
from proxy.settings import load_settings
from proxy.signals.network import AsnDatabase, NetworkInfo

from .conftest import RULES_DIR, proxy_settings


@pytest.fixture
def asn_db(tmp_path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-ASN", ipv4_compatible=True)
    writer.insert_network(IPSet(["203.0.113.0/24"]), {
        "autonomous_system_number": 16509, "autonomous_system_organization": "AMAZON-02"})
    writer.insert_network(IPSet(["198.51.100.0/24"]), {
        "autonomous_system_number": 64496, "autonomous_system_organization": "Example Broadband"})
    writer.insert_network(IPSet(["2001:db8::/32"]), {
        "autonomous_system_number": 24940, "autonomous_system_organization": "Hetzner Online GmbH"})
    path = tmp_path / "asn.mmdb"
    writer.to_db_file(str(path))
    return path


def test_lookups(asn_db: Path):
    db = AsnDatabase(asn_db)
    assert db.lookup("203.0.113.7") == NetworkInfo(16509, "AMAZON-02")
    assert db.lookup("2001:db8::5") == NetworkInfo(24940, "Hetzner Online GmbH")
    assert db.lookup("192.0.2.1") == NetworkInfo()
    assert db.lookup("not an address") == NetworkInfo()


def test_missing_and_corrupt_databases_warn_once_and_turn_the_signal_off(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    missing = AsnDatabase(tmp_path / "nope.mmdb")
    corrupt_path = tmp_path / "corrupt.mmdb"
    corrupt_path.write_bytes(b"\x00" * 4096 + b"not a maxmind database")
    corrupt = AsnDatabase(corrupt_path)
    assert not missing.available
    assert not corrupt.available
    assert missing.lookup("203.0.113.7") == NetworkInfo()
    events = [r.fields["event"] for r in caplog.records]
    assert events == ["asn-database-missing", "asn-database-unreadable"]
    assert not [r for r in caplog.records if r.exc_info]


def test_settings_resolve_the_database_path_beside_the_config(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "upstream: {url: 'http://127.0.0.1:1'}\nnetwork: {asn_database: db/asn.mmdb}\n")
    assert load_settings(config).network.asn_database == tmp_path.resolve() / "db" / "asn.mmdb"


NETWORK_RULES = """version: 1
rules:
  - name: cloud-audio
    match: {content: audio, datacenter: true}
    action: block
  - name: lab-range
    match: {cidr: [192.0.2.0/28]}
    action: block
  - name: named-org
    match: {org: [broadband], content: page}
    action: tarpit
    params: {seconds: 1}
"""


async def test_datacenter_asn_org_and_cidr_rules_through_the_proxy(
    aiohttp_server, run_proxy, tmp_path, asn_db
):
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="real")

    store = web.Application()
    store.router.add_get("/{tail:.*}", page)
    upstream = await aiohttp_server(store)
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR / "networks", rules / "networks")
    (rules / "10-net.yaml").write_text(NETWORK_RULES)
    settings = proxy_settings(
        f"http://127.0.0.1:{upstream.port}", rules_dir=rules, verdict_header=True,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    settings = replace(settings, network=replace(settings.network, asn_database=asn_db))
    base = await run_proxy(settings, LiveRules(load_rules(rules)))

    async def verdict(path: str, client: str) -> str:
        async with aiohttp.ClientSession() as s, s.get(
            base + path, headers={"X-Forwarded-For": client}
        ) as r:
            await r.read()
            return r.headers["X-SonicShield-Verdict"].split(" ")[0].rstrip(";")

    assert await verdict("/stream/a.mp3", "203.0.113.7") == "block"  # AWS: a server
    assert await verdict("/album/a", "203.0.113.7") == "allow"  # pages are not refused
    assert await verdict("/stream/a.mp3", "198.51.100.7") == "allow"  # a broadband listener
    assert await verdict("/album/a", "198.51.100.7") == "tarpit"
    assert await verdict("/album/a", "192.0.2.9") == "block"
    assert await verdict("/album/a", "192.0.2.99") == "allow"


def test_bad_network_match_values(tmp_path: Path, capsys):
    from proxy.cli import main

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-n.yaml").write_text(
        "version: 1\nrules:\n  - name: n\n    match: {asn: [AS16509], cidr: [10.0.0.0/33],"
        " datacenter: yes-please}\n    action: block\n")
    assert main(["check", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "rules/10-n.yaml:4:19: rule 'n': match key 'asn': ASNs are numbers like 16509, "
        "got 'AS16509'",
        "rules/10-n.yaml:4:36: rule 'n': match key 'cidr': not an address, CIDR or range list: "
        "'10.0.0.0/33'",
        "rules/10-n.yaml:4:62: rule 'n': match key 'datacenter': takes true or false",
        "3 errors",
    ]


PUBLISHED = {
    "creationTime": "2026-11-20T12:00:00.000000",
    "prefixes": [{"ipv4Prefix": "66.249.64.0/27"}, {"ipv4Prefix": "66.249.64.32/27"},
                 {"ipv6Prefix": "2001:4860:4801:10::/64"}],
}


def test_published_ranges_are_imported_and_matched_by_name(tmp_path: Path, capsys):
    from proxy.cli import main

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "10-r.yaml").write_text(
        "version: 1\nrules:\n  - name: r\n    match: {cidr: [testbot, 192.0.2.1]}\n"
        "    action: block\n")
    published = tmp_path / "testbot.json"
    published.write_text(json.dumps(PUBLISHED))
    assert main(["ranges", "import", "testbot", str(published), "--rules", str(rules),
                 "--source", "https://example.test/testbot.json"]) == 0
    assert "3 prefixes" in capsys.readouterr().out
    text = (rules / "networks" / "testbot.yaml").read_text()
    assert "# Source: https://example.test/testbot.json" in text
    assert "2026-11-20T12:00:00" in text
    ruleset = load_rules(rules)
    test = ruleset.rules[0].conditions[0].test
    for address, inside in [("66.249.64.0", True), ("66.249.64.63", True),  # merged /27s
                            ("66.249.64.64", False), ("66.249.63.255", False),
                            ("2001:4860:4801:10::1", True), ("2001:4860:4801:11::1", False),
                            ("192.0.2.1", True), ("192.0.2.2", False), ("not-an-ip", False)]:
        ex = Exchange("x", Client(address, address, False, "http", "h"), "GET", "/", "")
        assert test(ex) is inside, address


def test_bad_range_lists_and_names_are_reported(tmp_path: Path, capsys):
    from proxy.cli import main

    rules = tmp_path / "rules"
    (rules / "networks").mkdir(parents=True)
    (rules / "networks" / "testbot.yaml").write_text(
        "version: 1\nprefixes:\n  - 66.249.64.0/27\n  - 66.249.64.0/33\n")
    (rules / "10-r.yaml").write_text(
        "version: 1\nrules:\n  - name: r\n    match: {cidr: [testbto]}\n    action: block\n")
    assert main(["check", str(rules)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "rules/10-r.yaml:4:20: rule 'r': match key 'cidr': not an address, CIDR or range list: "
        "'testbto' (did you mean 'testbot'?) (lists in networks/: testbot)",
        "rules/networks/testbot.yaml:4:5: not a CIDR: '66.249.64.0/33'",
        "2 errors",
    ]
    bad = tmp_path / "bad.json"
    bad.write_text('{"prefixes": [{"ipv4Prefix": "300.1.2.3/8"}]}')
    assert main(["ranges", "import", "x", str(bad), "--rules", str(rules)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"sonicshield ranges import: {bad}: prefixes[0]: not an ipv4Prefix or ipv6Prefix: "
        "{'ipv4Prefix': '300.1.2.3/8'}")
    assert main(["ranges", "import", "Bad Name", str(bad), "--rules", str(rules)]) == 2
    assert not (rules / "networks" / "x.yaml").exists()
