"""Resolution against a real slapd: same answers as the LDIF, escaping, errors."""

from __future__ import annotations

import ldap3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podgrid.config import (
    BUILTIN_DEFAULT,
    ConfigSourceError,
    ConfigValueError,
    default_ldif,
    resolve,
)
from tests.config.ldif_samples import CE_DN, CONFIG_DN
from tests.harness.ports import free_port
from tests.harness.slapd import LdapSite, SlapdServer

INJECTION = "x)(objectClass=*"


@pytest.mark.parametrize(
    ("site", "ce"),
    [(None, None), ("Local", None), ("Local", "local-ce"), ("Nowhere", "x"), ("local", "LOCAL-CE")],
)
def test_ldap_and_ldif_give_the_same_settings_and_origins(
    slapd: SlapdServer, site: str | None, ce: str | None
) -> None:
    from_ldap = resolve(slapd.url, site, ce)
    from_ldif = resolve(default_ldif(), site, ce)
    assert from_ldap.settings == from_ldif.settings
    assert from_ldap.sources == from_ldif.sources
    assert from_ldap.missing_levels == from_ldif.missing_levels
    assert from_ldap.source == slapd.url


def test_filter_injection_finds_nothing_and_breaks_nothing(slapd: SlapdServer) -> None:
    r = resolve(slapd.url, INJECTION, INJECTION)
    assert set(r.sources.values()) == {CONFIG_DN, BUILTIN_DEFAULT}  # Slurm: no default
    assert len(r.missing_levels) == 2
    # The server is still fine afterwards.
    assert resolve(slapd.url, "Local", "local-ce").sources["poll_duration_s"] == CE_DN


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
        lambda s: s.strip() and s.strip().lower() != "local"
    )
)
def test_any_site_name_either_misses_or_matches_cleanly(slapd: SlapdServer, name: str) -> None:
    r = resolve(slapd.url, name, name)
    assert set(r.sources.values()) == {CONFIG_DN, BUILTIN_DEFAULT}  # Slurm: no default
    assert len(r.missing_levels) == 2


def test_values_set_on_a_site_and_its_ce_win(slapd: SlapdServer, ldap_site: LdapSite) -> None:
    conn = slapd.admin_connection()
    try:
        conn.modify(ldap_site.site_dn, {"podFallback": [(ldap3.MODIFY_REPLACE, ["exit"])]})
        conn.modify(ldap_site.ce_dn, {"podPollInterval": [(ldap3.MODIFY_REPLACE, [9])]})
    finally:
        conn.unbind()
    r = resolve(slapd.url, ldap_site.site, ldap_site.ce)
    assert r.settings.poll_interval_s == 9
    assert r.sources["poll_interval_s"] == ldap_site.ce_dn
    assert r.settings.fallback == "exit"
    assert r.sources["fallback"] == ldap_site.site_dn
    assert r.sources["agent_ttl_s"] == CONFIG_DN


def test_negative_and_unknown_enum_values_name_the_ce_dn(
    slapd: SlapdServer, ldap_site: LdapSite
) -> None:
    conn = slapd.admin_connection()
    try:
        conn.modify(ldap_site.ce_dn, {"podPollInterval": [(ldap3.MODIFY_REPLACE, [-4])]})
        with pytest.raises(ConfigValueError) as info:
            resolve(slapd.url, ldap_site.site, ldap_site.ce)
        assert (info.value.dn, info.value.attribute, info.value.value) == (
            ldap_site.ce_dn,
            "podPollInterval",
            -4,
        )
        conn.modify(ldap_site.ce_dn, {"podPollInterval": [(ldap3.MODIFY_DELETE, [])]})
        conn.modify(ldap_site.site_dn, {"podFallback": [(ldap3.MODIFY_REPLACE, ["retry"])]})
        with pytest.raises(ConfigValueError, match="podFallback='retry'") as info:
            resolve(slapd.url, ldap_site.site, ldap_site.ce)
        assert info.value.dn == ldap_site.site_dn
    finally:
        conn.unbind()


def test_unreachable_server_is_a_source_error_naming_the_url() -> None:
    url = f"ldap://127.0.0.1:{free_port()}/o=podgrid"
    with pytest.raises(ConfigSourceError, match="Connection refused") as info:
        resolve(url)
    assert url in str(info.value)
    assert info.value.reason == "source_unreachable"


def test_wrong_base_dn_and_url_without_base_are_source_errors(slapd: SlapdServer) -> None:
    with pytest.raises(ConfigSourceError, match="o=elsewhere"):
        resolve(f"ldap://{slapd.host}:{slapd.port}/o=elsewhere")
    with pytest.raises(ConfigSourceError, match="base DN"):
        resolve(f"ldap://{slapd.host}:{slapd.port}/")


def test_missing_slapd_fails_the_fixture_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tests.harness.slapd as harness

    monkeypatch.setattr(harness, "SLAPD", "/nonexistent/slapd")
    with (
        pytest.raises(pytest.fail.Exception, match="apt-get install slapd ldap-utils"),
        harness.start_slapd(),
    ):
        pass
