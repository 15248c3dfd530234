"""parse_reply: the shapes it accepts, those it rejects, and that it never raises anything else."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harvester.api import reply as reply_module
from harvester.api.reply import MAX_PLAUSIBLE_COUNT, parse_reply
from harvester.errors import ReplyError
from harvester.items import COLUMNS, COUNTER_FIELDS, ItemRows, item_schema

URL = "https://demos.plumgroup.com/vxml/start.php"


def item(page: str = "main.php", **counts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"page": page, "form": "main_menu", "item": "selection"}
    base.update({name: counts.get(name, 1) for name in COUNTER_FIELDS})
    return base


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- accepted shapes ------------------------------------------------------------------------------


def test_the_documented_example_with_escaped_slashes() -> None:
    raw = (
        b'{"applications":{"https:\\/\\/demos.plumgroup.com\\/vxml\\/start.php":[{"page":"main.php",'
        b'"form":"main_menu","item":"selection","visits":985,"filled":941,"nomatch":32,'
        b'"noinput":12,"transfer":0,"disconnect":0}]}}'
    )
    parsed = parse_reply(raw)
    assert len(parsed) == 1
    assert list(parsed.rows()) == [
        (URL, "main.php", "main_menu", "selection", 985, 941, 32, 12, 0, 0)
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"applications": {}}',
        b'{"applications": []}',
        b'{"applications": {"https://x": []}}',
        b'{"applications": {"https://x": {}}}',
        b'\xef\xbb\xbf{"applications": []}',  # a UTF-8 BOM
    ],
)
def test_no_data_is_a_valid_complete_answer(raw: bytes) -> None:
    assert len(parse_reply(raw)) == 0


def test_list_shapes_groups_mappings_and_bare_items() -> None:
    parsed = parse_reply(
        body(
            {
                "applications": [
                    {"application": "a", "items": [item("p1")]},
                    {"url": "b", "items": {"0": item("p2"), "2": item("p3")}},
                    {"c": [item("p4")], "d": []},
                    {**item("p5"), "application": "e"},
                    item("p6"),
                ]
            }
        )
    )
    assert parsed.application == ["a", "b", "b", "c", "e", ""]
    assert parsed.page == ["p1", "p2", "p3", "p4", "p5", "p6"]


def test_whole_floats_are_counts_and_extra_keys_are_ignored() -> None:
    parsed = parse_reply(body({"applications": {URL: [{**item(visits=3.0), "new_field": [1]}]}}))
    assert parsed.visits == [3]
    assert type(parsed.visits[0]) is int


def test_counters_up_to_the_plausible_bound_are_accepted() -> None:
    parsed = parse_reply(body({"applications": {URL: [item(visits=MAX_PLAUSIBLE_COUNT)]}}))
    assert parsed.visits == [MAX_PLAUSIBLE_COUNT]
    whole = parse_reply(body({"applications": {URL: [item(visits=float(MAX_PLAUSIBLE_COUNT))]}}))
    assert whole.visits == [MAX_PLAUSIBLE_COUNT]


@pytest.mark.parametrize(
    "value", [MAX_PLAUSIBLE_COUNT + 1, 2**63 - 1, 2**63, 2**80, 1e15, float(2**63)]
)
def test_implausibly_large_counters_are_rejected(value: float) -> None:
    """2^63-1 fits the INT64 column, but one such row breaks every view's sums (issue 12.8)."""
    for name in COUNTER_FIELDS:
        with pytest.raises(ReplyError, match=f"{name} is implausibly large"):
            parse_reply(body({"applications": {URL: [item(**{name: value})]}}))


def test_rows_convert_to_arrow_in_the_item_schema() -> None:
    parsed = parse_reply(body({"applications": {URL: [item(visits=7), item(page="b.php")]}}))
    batch = parsed.to_arrow()
    assert batch.schema == item_schema() and batch.num_rows == 2
    assert [tuple(r.values()) for r in batch.to_pylist()] == list(parsed.rows())


def test_an_error_key_with_null_is_not_an_error() -> None:
    assert len(parse_reply(body({"error": None, "applications": {URL: [item()]}}))) == 1


# -- rejected -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"", "not JSON"),
        (b"<html>502</html>", "not JSON"),
        (b'{"applications": {}', "not JSON"),
        (b"[]", "top level is a list"),
        (b"null", "top level is null"),
        (b'{"error": "Invalid date"}', "error reply: Invalid date"),
        (b'{"error": "x", "applications": {}}', "error reply"),
        (b"{}", "no 'applications'"),
        (b'{"applications": null}', "not an object or list"),
        (b'{"applications": "x"}', "not an object or list"),
        (b'{"applications": {"u": 3}}', r"applications\['u'\] is a number"),
        (b'{"applications": {"u": [3]}}', r"applications\['u'\]\[0\] is a number"),
        (b'{"applications": [3]}', r"applications\[0\] is a number"),
        (b'{"applications": [{"application": 3, "items": []}]}', "application is a number"),
        (b'{"applications": {"u": [{"page": "p"}]}}', "has no 'form'"),
        (b'{"applications": {"u": [{"visits": NaN}]}}', "NaN"),
        (b'{"applications": [' * 100_000, "not JSON"),
        (b'{"applications": {"\\ud800": []}}', ""),  # lone surrogate key, zero rows: allowed
    ],
)
def test_invalid_bodies(raw: bytes, reason: str) -> None:
    if reason == "":
        parse_reply(raw)
        return
    with pytest.raises(ReplyError, match=reason):
        parse_reply(raw)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"visits": -1}, "visits is negative"),
        ({"visits": True}, "visits is a boolean"),
        ({"filled": 1.5}, "filled is not a whole count"),
        ({"filled": -2.0}, "filled is negative"),
        ({"nomatch": "-3"}, "nomatch is a string"),
        ({"nomatch": " 3"}, "nomatch is a string"),
        ({"nomatch": "3.0"}, "nomatch is a string"),
        ({"nomatch": ""}, "nomatch is a string"),
        ({"nomatch": "\u0663"}, "nomatch is a string"),  # ARABIC-INDIC THREE: not ASCII
        ({"visits": "9" * 14}, "visits is implausibly large"),
        ({"noinput": None}, "noinput is null"),
        ({"transfer": [1]}, "transfer is a list"),
        ({"disconnect": 1e300}, "implausibly large"),
        ({"page": 3}, "page is a number"),
        ({"item": None}, "item is null"),
        ({"form": "\ud800"}, "lone UTF-16 surrogate"),
    ],
)
def test_invalid_items(bad: dict[str, Any], reason: str) -> None:
    document = {"applications": {URL: [item(), {**item(), **bad}]}}
    raw = json.dumps(document).encode()  # ensure_ascii: a surrogate travels as \\ud800
    with pytest.raises(ReplyError, match=reason) as caught:
        parse_reply(raw)
    assert "[1]" in str(caught.value)  # the location names the second item


def test_reasons_are_short() -> None:
    with pytest.raises(ReplyError) as caught:
        parse_reply(body({"error": "x" * 10_000}))
    assert len(str(caught.value)) < 100


# -- properties -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from([*COLUMNS, "items", "url", "error"])
item_like = st.dictionaries(field_names, json_values, max_size=10)


def _never_raises_anything_else(raw: bytes) -> None:
    try:
        parsed = parse_reply(raw)
    except ReplyError:
        return
    assert isinstance(parsed, ItemRows)
    lengths = {len(getattr(parsed, name)) for name in COLUMNS}
    assert len(lengths) == 1


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    _never_raises_anything_else(raw)


@settings(max_examples=200)
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    _never_raises_anything_else(json.dumps(value).encode())


# what may stand under "applications": anything, mappings of item-like lists, lists of items
application_shapes = st.one_of(
    json_values,
    st.dictionaries(st.text(max_size=8), st.lists(item_like, max_size=3), max_size=3),
    st.lists(st.one_of(item_like, json_values), max_size=4),
)


@settings(max_examples=120)
@given(application_shapes)
def test_arbitrary_applications(value: Any) -> None:
    _never_raises_anything_else(json.dumps({"applications": value}).encode())


counts = st.integers(min_value=0, max_value=MAX_PLAUSIBLE_COUNT)
valid_items = st.fixed_dictionaries(
    {"page": st.text(), "form": st.text(), "item": st.text()}
    | {name: counts for name in COUNTER_FIELDS}
)
valid_replies = st.dictionaries(st.text(), st.lists(valid_items, max_size=5), max_size=4)


@settings(max_examples=120)
@given(valid_replies, st.booleans())
def test_valid_replies_round_trip(apps: dict[str, list[dict[str, Any]]], as_list: bool) -> None:
    shaped: Any = (
        [{"application": url, "items": items} for url, items in apps.items()] if as_list else apps
    )
    parsed = parse_reply(json.dumps({"applications": shaped}).encode())
    expected = [
        (url, *(entry[name] for name in COLUMNS[1:]))
        for url, items in apps.items()
        for entry in items
    ]
    assert list(parsed.rows()) == expected


# -- the fast decoder agrees with the standard one ------------------------------------------------


def _one_item(**fields: str) -> bytes:
    """A body of one item whose fields are written as given (raw JSON text), zeros elsewhere."""
    item = {"page": '"p"', "form": '"f"', "item": '"i"'} | dict.fromkeys(COUNTER_FIELDS, "0")
    pairs = ", ".join(f'"{key}": {text}' for key, text in (item | fields).items())
    return ('{"applications": {"a": [{' + pairs + "}]}}").encode()


EDGE_BODIES = [
    _one_item(visits="18446744073709551616"),  # past 64 bits: orjson reads a float
    b'{"applications": {}, "extra": 123456789012345678901234567890}',  # an ignored huge number
    b'{"applications": {"\\ud800": []}}',  # a lone surrogate orjson refuses
    _one_item(page='"\\ud800"'),
    b'\xef\xbb\xbf{"applications": []}',  # a BOM
    b'{"applications": [], "x": 1e400}',  # infinity when read as a double
    b'{"applications": [], "x": NaN}',
    b'{"applications": [], "applications": {}}',  # duplicate keys: the last wins
    _one_item(visits="-0.0", filled="3.0", nomatch='"7"'),
    b'{"applications": {"a": "\xff"}}',  # not UTF-8
    b"[" * 3000 + b"]" * 3000,  # nested too deeply
]


def _verdict(raw: bytes, parse: Callable[[bytes], ItemRows] = parse_reply) -> object:
    """The rows ``parse`` reads from ``raw``, or the reason it refuses them."""
    try:
        return list(parse(raw).rows())
    except ReplyError as exc:
        return f"ReplyError: {exc}"


def _standard_verdict(raw: bytes) -> object:
    return _verdict(raw, reply_module._parse_standard)


def test_the_fast_decoder_is_installed() -> None:
    # without it every property below would compare the standard path with itself
    assert reply_module._fast_loads is not None


@pytest.mark.parametrize("raw", EDGE_BODIES)
def test_the_fast_path_gives_the_standard_verdict_on_edge_cases(raw: bytes) -> None:
    assert _verdict(raw) == _standard_verdict(raw)


# 120 examples: 300 took 9 s of the suite; every run draws new ones, and the edge cases above pin
# the bodies where the two decoders are known to differ
@settings(max_examples=120)
@given(st.one_of(application_shapes, valid_replies), st.booleans())
def test_the_fast_path_gives_the_standard_verdict(value: Any, ascii_only: bool) -> None:
    raw = json.dumps({"applications": value}, ensure_ascii=ascii_only).encode()
    assert _verdict(raw) == _standard_verdict(raw)
