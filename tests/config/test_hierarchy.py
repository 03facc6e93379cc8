"""Resolution from LDIF files: precedence, origins, defaults, bad values and escaping."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podgrid.config import (
    BUILTIN_DEFAULT,
    ConfigError,
    ConfigSourceError,
    ConfigValueError,
    PodSettings,
    default_ldif,
    resolve,
)
from tests.config.ldif_samples import CE_DN, CONFIG_DN, SITE_DN, with_lines

INJECTION = "x)(objectClass=*"


def test_default_ldif_resolves_the_example_ce_with_the_dn_of_every_value() -> None:
    r = resolve(default_ldif(), "Local", "local-ce")
    assert r.settings.poll_duration_s == 30
    assert r.sources["poll_duration_s"] == CE_DN
    assert r.settings.poll_interval_s == 2
    assert r.sources["poll_interval_s"] == SITE_DN
    assert r.settings.agent_ttl_s == 86400
    assert r.sources["agent_ttl_s"] == CONFIG_DN
    assert r.settings.master_hosts == ["localhost"]
    assert set(r.sources) == set(PodSettings.model_fields)
    assert r.missing_levels == ()


def test_each_level_wins_over_the_less_specific_ones(tmp_path: Path) -> None:
    path = with_lines(tmp_path, SITE_DN, "podFallback: exit", "podPollDuration: 45")
    site_only = resolve(path, "Local")
    assert site_only.settings.poll_duration_s == 45
    assert site_only.sources["poll_duration_s"] == SITE_DN
    assert site_only.settings.fallback == "exit"
    with_ce = resolve(path, "Local", "local-ce")
    assert with_ce.settings.poll_duration_s == 30
    assert with_ce.sources["poll_duration_s"] == CE_DN
    assert with_ce.sources["fallback"] == SITE_DN
    top = resolve(path)
    assert top.settings.poll_duration_s == 60
    assert top.sources["poll_duration_s"] == CONFIG_DN


def test_names_match_case_insensitively_like_ldap() -> None:
    r = resolve(default_ldif(), "LOCAL", "Local-CE")
    assert r.sources["poll_duration_s"] == CE_DN
    assert r.missing_levels == ()


def test_unknown_site_and_ce_fall_back_and_say_so() -> None:
    r = resolve(default_ldif(), "Nowhere", "no-ce")
    assert r.settings.poll_interval_s == 5
    assert set(r.sources.values()) == {CONFIG_DN, BUILTIN_DEFAULT}  # Slurm: no default
    assert r.used_defaults
    assert r.missing_levels == (
        "name=no-ce,ou=CE,ou=Services,ou=Nowhere,ou=Sites,o=podgrid",
        "ou=Nowhere,ou=Sites,o=podgrid",
    )


def test_filter_injection_in_site_and_ce_names_finds_nothing() -> None:
    r = resolve(default_ldif(), INJECTION, INJECTION)
    assert set(r.sources.values()) == {CONFIG_DN, BUILTIN_DEFAULT}  # Slurm: no default
    assert len(r.missing_levels) == 2
    assert r.settings == resolve(default_ldif()).settings


def test_ce_is_not_found_under_another_site() -> None:
    r = resolve(default_ldif(), "Nowhere", "local-ce")
    assert r.sources["poll_duration_s"] == CONFIG_DN


def test_ce_without_site_and_empty_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="needs its site"):
        resolve(default_ldif(), None, "local-ce")
    with pytest.raises(ConfigError, match="must not be empty"):
        resolve(default_ldif(), " ")


def test_attributes_unset_everywhere_use_built_in_defaults_equal_to_the_ldif(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bare.ldif"
    path.write_text("dn: o=podgrid\no: podgrid\n\ndn: ou=Config,o=podgrid\nou: Config\n")
    bare = resolve(path)
    assert set(bare.sources.values()) == {BUILTIN_DEFAULT}
    assert bare.settings == resolve(default_ldif()).settings


@pytest.mark.parametrize(
    ("line", "attribute", "value", "expected"),
    [
        ("podPollInterval: often", "podPollInterval", "often", "integer"),
        ("podPollInterval: 2.5", "podPollInterval", "2.5", "integer"),
        ("podAgentTTL: -10", "podAgentTTL", "-10", ">= 0"),
        ("podPollInterval: 0", "podPollInterval", "0", ">= 1"),
        ("podFallback: retry", "podFallback", "retry", "'batch', 'exit'"),
        ("podRegistryURL: ftp://host", "podRegistryURL", "ftp://host", "http"),
        ("podMasterHosts: two words", "podMasterHosts", "two words", "host names"),
        ("podPolInterval: 3", "podpolinterval", "3", "known pod"),
    ],
)
def test_bad_value_names_dn_attribute_value_and_expectation(
    tmp_path: Path, line: str, attribute: str, value: str, expected: str
) -> None:
    path = with_lines(tmp_path, CE_DN, line, drop=line.split(":")[0] + ":")
    with pytest.raises(ConfigValueError) as info:
        resolve(path, "Local", "local-ce")
    err = info.value
    assert (err.dn, err.attribute, err.value) == (CE_DN, attribute, value)
    assert expected in err.expected
    assert CE_DN in str(err)
    assert attribute in str(err)
    assert repr(value) in str(err)


def test_a_shadowed_bad_value_is_still_reported(tmp_path: Path) -> None:
    # The CE overrides podPollDuration, but a broken ou=Config value must not hide.
    path = with_lines(tmp_path, CONFIG_DN, "podPollDuration: soon", drop="podPollDuration:")
    with pytest.raises(ConfigValueError) as info:
        resolve(path, "Local", "local-ce")
    assert info.value.dn == CONFIG_DN


def test_two_values_for_a_single_valued_attribute(tmp_path: Path) -> None:
    path = with_lines(tmp_path, SITE_DN, "podPollInterval: 3")
    with pytest.raises(ConfigValueError, match="a single value"):
        resolve(path, "Local")


def test_multi_valued_hosts_and_base64_values_and_folded_lines(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"exit").decode()
    path = with_lines(
        tmp_path,
        SITE_DN,
        "podMasterHosts: master1.example.org",
        "podMasterHosts: master2.exa",
        " mple.org",
        f"podFallback:: {encoded}",
        "# a comment inside the entry",
    )
    r = resolve(path, "Local")
    assert r.settings.master_hosts == ["master1.example.org", "master2.example.org"]
    assert r.settings.fallback == "exit"
    assert r.sources["fallback"] == SITE_DN


def test_missing_file_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ldif"
    with pytest.raises(ConfigSourceError, match=str(missing)):
        resolve(missing)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("this is not ldif\n", "not valid LDIF"),
        ("dn: o=podgrid\no: podgrid\n", "no ou=Config"),
        ("dn: o=podgrid\npodFallback:: !!!notbase64\n", "not valid LDIF"),
        ("", "no LDIF entries"),
    ],
)
def test_broken_ldif_is_a_source_error(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "broken.ldif"
    path.write_text(text)
    with pytest.raises(ConfigSourceError, match=problem) as info:
        resolve(path)
    assert str(path) in str(info.value)


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=1, max_size=30).filter(lambda s: s.strip().lower() != "local"))
def test_any_site_name_misses_cleanly_in_the_ldif(name: str) -> None:
    if not name.strip():
        with pytest.raises(ConfigError, match="must not be empty"):
            resolve(default_ldif(), name, name)
        return
    r = resolve(default_ldif(), name, name)
    assert set(r.sources.values()) == {CONFIG_DN, BUILTIN_DEFAULT}  # Slurm: no default
    assert len(r.missing_levels) == 2
