"""The shipped rule fixtures pass, and a failing fixture is reported with its position."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.fixtures import run_fixtures
from proxy.rules import load_rules

from .conftest import RULES_DIR

SHIPPED = load_rules(RULES_DIR)
OUTCOMES = run_fixtures(RULES_DIR / "fixtures", SHIPPED)


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: str(o.where))
def test_shipped_fixture(outcome):
    assert outcome.got == outcome.expected


def test_failures_name_file_line_and_both_verdicts(tmp_path: Path, capsys):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "wrong.yaml").write_text("""version: 1
name: a wrong expectation
requests:
  - path: /stream/a.mp3
    headers: {User-Agent: "Wget/1.21"}
    expect: allow
""")
    assert main(["test-rules", str(fixtures), "--rules", str(RULES_DIR)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "fixtures/wrong.yaml:4:5: expected allow, got truncate",
        "0 passed, 1 failed",
    ]


def test_bad_fixture_files_are_errors_with_positions(tmp_path: Path, capsys):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "bad.yaml").write_text("""version: 1
requests:
  - path: /
    expect: alow
""")
    assert main(["test-rules", str(fixtures), "--rules", str(RULES_DIR)]) == 2
    assert capsys.readouterr().err.strip() == (
        "fixtures/bad.yaml:4:13: 'expect' must be an action or {action: A, rule: NAME}")
