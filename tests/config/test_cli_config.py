"""``podgrid config show``: table and JSON, on the embedded default and on a real slapd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ldap3
import pytest

from podgrid.cli import main
from podgrid.config import ATTRIBUTE_FIELDS
from podgrid.config.hierarchy import BUILTIN_DEFAULT
from tests.config.ldif_samples import CE_DN, CONFIG_DN, SITE_DN, with_lines
from tests.harness.ports import free_port
from tests.harness.slapd import SlapdServer

PODGRID = str(Path(sys.executable).with_name("podgrid"))


def table_rows(out: str) -> dict[str, tuple[str, str]]:
    """attribute -> (value, source DN) from the rich table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 3 and cells[0] in ATTRIBUTE_FIELDS:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_show_prints_every_pod_value_with_its_dn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--site", "Local", "--ce", "local-ce"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert set(rows) == set(ATTRIBUTE_FIELDS)
    assert rows["podPollDuration"] == ("30", CE_DN)
    assert rows["podPollInterval"] == ("2", SITE_DN)
    assert rows["podRegistryURL"] == ("http://127.0.0.1:8885", CONFIG_DN)


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--site", "Local", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["poll_interval_s"] == 2
    assert doc["sources"]["poll_interval_s"] == SITE_DN
    assert doc["sources"]["poll_duration_s"] == CONFIG_DN
    assert doc["settings"]["master_hosts"] == ["localhost"]
    assert doc["missing_levels"] == []
    assert doc["site"] == "Local"


def test_show_reports_a_missing_site(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--site", "x)(objectClass=*", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # ou=Config, or the built-in default for what it leaves unset (the Slurm backend's).
    assert set(doc["sources"].values()) == {CONFIG_DN, BUILTIN_DEFAULT}
    assert doc["missing_levels"] == ["ou=x)(objectClass\\=*,ou=Sites,o=podgrid"]


def test_unreachable_source_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ldap://127.0.0.1:{free_port()}/o=podgrid"
    assert main(["config", "show", "--config", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert url in captured.err


def test_bad_value_exits_2_naming_the_dn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = with_lines(tmp_path, SITE_DN, "podFallback: sometimes")
    assert main(["config", "show", "--config", str(path), "--site", "Local"]) == 2
    err = capsys.readouterr().err
    assert SITE_DN in err
    assert "podFallback='sometimes'" in err
    assert "'batch', 'exit'" in err


def test_ce_without_site_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--ce", "local-ce"]) == 2
    assert "needs its site" in capsys.readouterr().err


def test_subprocess_against_slapd_shows_an_ldapmodify_from_the_ce(slapd: SlapdServer) -> None:
    conn = slapd.admin_connection()
    try:
        conn.modify(CE_DN, {"podPollInterval": [(ldap3.MODIFY_REPLACE, [11])]})
        args = [PODGRID, "config", "show", "--config", slapd.url, "--site", "Local"]
        table = subprocess.run([*args, "--ce", "local-ce"], capture_output=True, text=True)
        as_json = subprocess.run(
            [*args, "--ce", "local-ce", "--json"], capture_output=True, text=True
        )
    finally:
        conn.modify(CE_DN, {"podPollInterval": [(ldap3.MODIFY_DELETE, [])]})
        conn.unbind()
    assert table.returncode == 0, table.stderr
    rows = table_rows(table.stdout)
    assert rows["podPollInterval"] == ("11", CE_DN)
    assert rows["podPollDuration"] == ("30", CE_DN)
    assert rows["podAgentTTL"] == ("86400", CONFIG_DN)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["settings"]["poll_interval_s"] == 11
    assert doc["sources"]["poll_interval_s"] == CE_DN
    assert doc["source"] == slapd.url


def test_subprocess_on_the_embedded_default_and_an_unreachable_server() -> None:
    ok = subprocess.run(
        [PODGRID, "config", "show", "--site", "Local", "--ce", "local-ce"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(table_rows(ok.stdout)) == len(ATTRIBUTE_FIELDS)
    url = f"ldap://127.0.0.1:{free_port()}/o=podgrid"
    down = subprocess.run(
        [PODGRID, "config", "show", "--config", url], capture_output=True, text=True
    )
    assert down.returncode == 1
    assert down.stderr.strip().splitlines() == [
        f"podgrid config show: cannot read configuration from {url}: "
        "socket connection error while opening: [Errno 111] Connection refused"
    ]
