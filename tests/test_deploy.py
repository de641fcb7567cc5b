"""The deploy files are accepted by the tools that will run them: docker-compose (no engine
needed for `config`), systemd-analyze, nginx -t with a certificate made here, caddy validate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required; make test installs it")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_compose_file_is_accepted():
    out = run(tool("docker-compose"), "-f", str(DEPLOY / "docker-compose.yml"), "config")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert set(services) == {"store", "sonicshield", "prometheus", "grafana"}
    mounts = [str(v) for v in services["sonicshield"]["volumes"]]
    assert any("sonicshield.yaml" in m for m in mounts)
    # the config it mounts is a valid SonicShield config
    from proxy.settings import load_settings

    settings = load_settings(DEPLOY / "sonicshield.yaml")
    assert settings.upstream.url == "http://store:8081"
    assert str(settings.admin.listen) == "0.0.0.0:9180"


def test_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "systemd" / "sonicshield.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    # verify checks that ExecStart exists: point it at this checkout's command
    here = tmp_path / "sonicshield.service"
    command = Path(sys.executable).parent / "sonicshield"
    here.write_text(unit.replace("/opt/sonicshield/bin/sonicshield", str(command)))
    out = run(tool("systemd-analyze"), "verify", str(here))
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_nginx_front_config_is_accepted(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = run(tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
               "-subj", "/CN=music.example.org", "-keyout", str(key), "-out", str(cert))
    assert made.returncode == 0, made.stderr
    site = (DEPLOY / "nginx" / "sonicshield.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/music.example.org/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/music.example.org/privkey.pem", str(key))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n  access_log off;\n  include {tmp_path}/site.conf;\n}}\n")
    out = run(tool("nginx"), "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


def test_caddyfile_is_accepted():
    out = run(tool("caddy"), "validate", "--config", str(DEPLOY / "caddy" / "Caddyfile"),
              "--adapter", "caddyfile")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Valid configuration" in out.stdout + out.stderr
