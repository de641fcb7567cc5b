"""`make test` sets up its own system packages from one list (system-packages.txt), read by
tests/system-packages.sh, which the Makefile's test target runs first and .ci/run reaches
only through `make test`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import ROOT

SCRIPT = ROOT / "tests" / "system-packages.sh"


def check(listing: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEM_PACKAGES": str(listing), **env})


def test_every_package_of_the_list_is_here():
    """What the suite needs is all present (make test installed it, or said what to do)."""
    done = check(ROOT / "system-packages.txt")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_missing_packages_are_named_with_the_command_that_installs_them(tmp_path):
    listing = tmp_path / "packages.txt"
    listing.write_text("# a comment\nmake make\n\nsonicshield-no-such-package\n"
                       "another-missing-one   no-such-command\n")
    done = check(listing, SYSTEM_PACKAGES_ASK="1")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "make test: 2 system packages the tests need are missing: sonicshield-no-such-package "
        "another-missing-one",
        "  Install them (as root), then run make test again:",
        "  sudo apt-get update && sudo apt-get install -y --no-install-recommends "
        "sonicshield-no-such-package another-missing-one",
    ]


def test_a_command_stands_for_a_package_the_package_manager_does_not_list(tmp_path):
    listing = tmp_path / "packages.txt"
    listing.write_text("sonicshield-no-such-package sh\n")
    assert check(listing, SYSTEM_PACKAGES_ASK="1").returncode == 0


def test_ci_and_make_read_the_one_list():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("make test")
    assert "apt-get install -y -q --no-install-recommends make\n" in ci  # make alone
    makefile = (ROOT / "Makefile").read_text()
    assert "\t@sh tests/system-packages.sh\n" in makefile
    assert "test: system\n" in makefile
