"""Rule reload: over the authenticated admin endpoint and on SIGHUP; a bad reload keeps the old
rules, is logged, and is counted."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import aiohttp

from .conftest import PASSTHROUGH_RULES

TOKEN = "s3cret-admin-token-for-tests"
BLOCK_ECHO = """version: 1
rules:
  - name: no-echo
    match: {path: /echo}
    action: block
"""


async def _status(method: str, url: str, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kwargs) as r:
        body = await r.json() if r.content_type == "application/json" else {}
        return r.status, body


def test_reload_refused_without_a_configured_token(spawn_proxy, upstream_process):
    proxy = spawn_proxy(upstream_process, admin=True)
    status, body = asyncio.run(_status("POST", f"http://127.0.0.1:{proxy.admin_port}/rules/reload",
                                       headers={"Authorization": "Bearer anything"}))
    assert (status, body) == (401, {"error": "unauthorised: set admin.token to enable"})


def test_reload_with_token_keeps_old_rules_on_error_and_on_sighup(
    spawn_proxy, upstream_process, tmp_path: Path
):
    rules = tmp_path / "rules"
    shutil.copytree(PASSTHROUGH_RULES, rules)
    proxy = spawn_proxy(upstream_process, admin=True, admin_token=TOKEN, rules_dir=rules)
    reload_url = f"http://127.0.0.1:{proxy.admin_port}/rules/reload"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario() -> None:
        assert (await _status("GET", proxy.url + "/echo"))[0] == 200
        status, body = await _status("POST", reload_url, headers={"Authorization": "Bearer no"})
        assert (status, body) == (401, {"error": "unauthorised: missing or wrong token"})

        (rules / "10-block.yaml").write_text(BLOCK_ECHO)
        status, body = await _status("POST", reload_url, headers=auth)
        assert (status, body["rules"]) == (200, 2)
        assert (await _status("GET", proxy.url + "/echo"))[0] == 403

        (rules / "10-block.yaml").write_text(BLOCK_ECHO.replace("action: block", "action: blok"))
        status, body = await _status("POST", reload_url, headers=auth)
        assert status == 422
        assert body["errors"] == [
            "rules/10-block.yaml:5:13: rule 'no-echo': unknown action 'blok' "
            "(did you mean 'block'?)"
        ]
        assert (await _status("GET", proxy.url + "/echo"))[0] == 403  # old rules kept

        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{proxy.admin_port}/metrics"
        ) as r:
            metrics = await r.text()
        assert 'sonicshield_rule_reloads_total{result="failed"} 1.0' in metrics
        assert 'sonicshield_rule_reloads_total{result="ok"} 1.0' in metrics

    asyncio.run(scenario())
    assert '"event":"rules-reload-failed"' in proxy.log

    (rules / "10-block.yaml").unlink()
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while asyncio.run(_status("GET", proxy.url + "/echo"))[0] != 200:
        assert time.monotonic() < deadline, "SIGHUP did not reload the rules"
        time.sleep(0.05)
