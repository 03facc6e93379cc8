"""The ApMon datagram decoder against datagrams built by an independent XDR encoder."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podgrid.monitoring.apmon import REASONS, ApMonDatagram, DatagramError, decode_datagram
from tests.monitoring.xdr_encoder import FLOAT32, FLOAT64, INT32, STRING, encode, xdr_string

SERVER = {"Address": "http://127.0.0.1:9000", "NeededWorkers": 3}


def test_decodes_every_type_and_the_timestamp() -> None:
    data = encode(
        "PoD_Masters",
        "42",
        [
            ("Address", STRING, "http://127.0.0.1:9000"),
            ("NeededWorkers", INT32, -7),
            ("Load", FLOAT32, 0.5),
            ("Memory", FLOAT64, 1.25e9),
            ("Empty", STRING, ""),
        ],
        password="secret",
        version="2.2.8-py",
        instance_id=-99,
        seq=17,
        time_s=1_700_000_000,
    )
    d = decode_datagram(data)
    assert d == ApMonDatagram(
        version="2.2.8-py",
        password="secret",
        instance_id=-99,
        seq=17,
        cluster="PoD_Masters",
        node="42",
        params=(
            ("Address", "http://127.0.0.1:9000"),
            ("NeededWorkers", -7),
            ("Load", 0.5),
            ("Memory", 1.25e9),
            ("Empty", ""),
        ),
        time_s=1_700_000_000,
    )
    assert isinstance(d.params[1][1], int)


def test_timestamp_is_optional_and_float32_keeps_its_precision() -> None:
    d = decode_datagram(encode("c", "n", [("x", FLOAT32, 0.1)]))
    assert d.time_s is None
    assert d.params == (("x", struct.unpack(">f", struct.pack(">f", 0.1))[0]),)


def test_zero_parameters_and_unicode_names() -> None:
    d = decode_datagram(encode("Ŝite_é", "nœud", [], password="pä"))
    assert (d.cluster, d.node, d.params, d.password) == ("Ŝite_é", "nœud", (), "pä")


def test_every_strict_prefix_is_truncated() -> None:
    data = encode("PoD_Masters", "42", SERVER)
    for cut in range(len(data)):
        with pytest.raises(DatagramError) as err:
            decode_datagram(data[:cut])
        assert err.value.reason == "truncated", cut


def _reason(data: bytes) -> str:
    with pytest.raises(DatagramError) as err:
        decode_datagram(data)
    return err.value.reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (xdr_string("x:1p:") + b"\0" * 20, "bad_header"),
        (xdr_string("v:1") + b"\0" * 20, "bad_header"),
        (encode("c", "n", [("x", 3, b"\0\0\0\0")]), "bad_type"),
        (encode("c", "n", [("x", 1, b"\0\0\0\0")]), "bad_type"),
        (encode("c", "n", [], count=-1), "too_many_params"),
        (encode("c", "n", [], count=5000), "too_many_params"),
        (encode("c", "n", [], count=3), "truncated"),
        (encode(b"\xff\xfe", "n", {"x": 1}), "bad_utf8"),
        (encode("c", "n", [("x", STRING, b"\xc3")]), "bad_utf8"),
        (encode("a/b", "n", {"x": 1}), "bad_name"),
        (encode("c", "", {"x": 1}), "bad_name"),
        (encode("c", "n", {"a|b": 1}), "bad_name"),
        (encode("c", "n", [("x", FLOAT64, float("nan"))]), "bad_value"),
        (encode("c", "n", [("x", FLOAT32, float("inf"))]), "bad_value"),
        (encode("c", "n", {"x": "two\nlines"}), "bad_value"),
        (encode("c", "n", {"x": 1}, time_s=0), "bad_timestamp"),
        (encode("c", "n", {"x": 1}) + b"\0\0", "trailing"),
        (encode("c", "n", {"x": 1}, time_s=5) + b"\0\0\0\0", "trailing"),
    ],
)
def test_malformed_datagrams_name_their_reason(data: bytes, reason: str) -> None:
    assert _reason(data) == reason


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_datagram_error(data: bytes) -> None:
    reason = None
    try:
        decode_datagram(data)
    except DatagramError as e:
        reason = e.reason
    assert reason is None or reason in REASONS


names = st.text(
    alphabet=st.characters(blacklist_characters="/|\r\n\t\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)
values = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
        max_size=40,
    ),
    st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(
    cluster=names,
    node=names,
    params=st.dictionaries(names, values, max_size=12),
    seq=st.integers(-(2**31), 2**31 - 1),
    time_s=st.none() | st.integers(1, 2**31 - 1),
)
def test_valid_datagrams_round_trip(
    cluster: str, node: str, params: dict[str, str | int | float], seq: int, time_s: int | None
) -> None:
    d = decode_datagram(encode(cluster, node, params, seq=seq, time_s=time_s))
    assert (d.cluster, d.node, d.seq, d.time_s) == (cluster, node, seq, time_s)
    assert d.params == tuple(params.items())
