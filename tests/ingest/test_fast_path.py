"""The set-based fast path must store exactly what the Python path stores, and reject the same.

Both paths run on the same input into two data directories with one secret; every
stored row is compared field by field (JSON compared as values), and the rejected
sets compared by id and reasons.
"""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from omnithread.events import EVENT_SCHEMAS
from omnithread.events.schema import FieldSpec
from omnithread.workspace import Workspace
from tests.conftest import assert_same, both_paths, write_lines


@pytest.fixture
def shared_secret(monkeypatch):
    monkeypatch.setenv("OMNITHREAD_SECRET", "conformance-secret-0123456789")


def test_the_simulated_retailer_is_stored_identically(tmp_path, settings, small_world, shared_secret):
    out, manifest = small_world
    jsonl = [Path(p) for p in manifest["sources"] if p.endswith(".jsonl")]
    fast, python = both_paths(tmp_path, settings, jsonl)
    assert len(fast[0]) > 5_000
    assert_same(fast, python)


# the pools both the hypothesis strategies and the seeded generator draw from
_SCALARS = [
    None,
    True,
    False,
    -3,
    0,
    2,
    1.5,
    -0.25,
    "",
    "P1",
    "x y",
    "2026-09-01T10:00:00Z",
    "a@b.co",
    " A@B.CO ",
    "07700 900123",
    "LC 1234-5678",
    "tok_abcd",
    "palm_1234",
    "em_" + "0" * 32,
    'é\\n"q',
    "web",
    "store",
    "browser",
    "app_code",
    "palm",
    "none",
    "S1",
    "call 07700 900123",
    "x%40y.org",
    "203.0.113.9",
]
_KEYS = [
    "product_id",
    "price",
    "quantity",
    "products",
    "store_id",
    "entry_method",
    "entry_token",
    "purposes",
    "order_id",
    "email",
    "phone",
    "loyalty_card",
    "payment_token",
    "palm_token",
    "app_code",
    "palm_template",
    "query",
    "total",
    "channel",
    "consent",
    "traits",
    "misplaced",
    "Email",
    "contact_email",
    "ip",
    "note",
]

names = st.sampled_from(sorted(EVENT_SCHEMAS) + ["Custom Thing"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from([v for v in _SCALARS if isinstance(v, str)]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.lists(
        st.dictionaries(st.sampled_from(["product_id", "price", "quantity", "name"]), scalars, max_size=3), max_size=2
    ),
)
sections = st.dictionaries(
    st.sampled_from(_KEYS),
    values | st.dictionaries(st.sampled_from(["analytics", "email", "phone"]), scalars, max_size=2),
    max_size=5,
)
events = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "track", "identify", "page", "screen", "alias"])},
    optional={
        "event": names,
        "userId": st.sampled_from(["u1", "u2", "", "a@b.co", 7]),
        "anonymousId": st.sampled_from(["d1", "d2"]),
        "messageId": st.sampled_from([f"m{i}" for i in range(8)]),
        "properties": sections,
        "traits": sections,
        "context": sections,
        "timestamp": st.sampled_from(
            [
                "2026-09-01T10:00:00Z",
                "2026-09-01T10:00:00.123456+02:00",
                "2026-09-01 10:00",
                "2031-01-01T00:00:00Z",
                "x",
            ]
        ),
        "originalTimestamp": st.sampled_from(["2026-09-01T12:00:00.000Z"]),
        "sentAt": st.sampled_from(["2026-09-01T12:00:05.000Z"]),
        "receivedAt": st.sampled_from(["2026-09-01T10:00:06.000Z", "2026-09-01T10:00:06"]),
        "name": st.sampled_from(["Home", 3]),
        "extraField": st.just(1),
    },
)


@given(st.lists(events, min_size=1, max_size=40))
@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_events_are_judged_and_stored_identically(tmp_path_factory, settings, shared_secret, payloads):
    tmp = tmp_path_factory.mktemp("conformance")
    path = write_lines(tmp / "generated.jsonl", payloads)
    fast, python = both_paths(tmp, settings, [path])
    assert_same(fast, python)


def test_escapes_nulls_booleans_and_number_forms_are_judged_identically(tmp_path, settings, shared_secret):
    """Shapes the fast path reads in its own way: a key spelt with an escape, JSON nulls where
    strings belong, both booleans, numbers in exponent form."""
    base = b'"userId":"u1","originalTimestamp":"2026-09-01T10:00:00Z","context":{"channel":"web"}'
    store = b'"userId":"u1","originalTimestamp":"2026-09-01T10:00:00Z","context":{"channel":"store"}'
    lines = [
        # an escaped "products" key holding a line without its product_id, and a good one
        b'{"type":"track","event":"Order Completed","messageId":"e1",'
        + base
        + b',"properties":{"order_id":"o1","product\\u0073":[{"price":3}]}}',
        b'{"type":"track","event":"Order Completed","messageId":"e2",'
        + base
        + b',"properties":{"order_id":"o2","product\\u0073":[{"product_id":"P1","price":3}]}}',
        b'{"type":"page","messageId":"e3","userId":"u1","context":{"channel":null}}',
        b'{"type":"identify","messageId":"e4",' + base + b',"traits":{"email":null,"phone":null,"firstName":"A"}}',
        b'{"type":"track","event":"Store Entered","messageId":"e5",'
        + store
        + b',"properties":{"store_id":"S1","entry_method":"palm","entry_token":null}}',
        b'{"type":"track","event":"Product Returned To Shelf","messageId":"e6",'
        + store
        + b',"properties":{"store_id":"S1","product_id":"P1","misplaced":false}}',
        b'{"type":"track","event":"Product Returned To Shelf","messageId":"e7",'
        + store
        + b',"properties":{"store_id":"S1","product_id":"P1","misplaced":true}}',
        b'{"type":"track","event":"Product Viewed","messageId":"e8",'
        + base
        + b',"properties":{"product_id":"P1","price":1e1,"quantity":2}}',
        b'{"type":"track","event":"Product Viewed","messageId":"e9",'
        + base
        + b',"properties":{"product_id":"P1","price":1.5E-1,"quantity":2.0}}',
        b'{"type":"track","event":"Product Viewed","messageId":"e10",'
        + base
        + b',"properties":{"product_id":"P\\u00e9","name":null}}',
    ]
    path = write_lines(tmp_path / "edges.jsonl", lines)
    fast, python = both_paths(tmp_path, settings, [path])
    assert {"e2", "e3", "e6", "e7", "e8", "e10"} <= fast[0].keys()
    assert "e1" not in fast[0] and "e5" not in fast[0]
    assert_same(fast, python)


def test_the_events_own_rules_come_from_the_schema_and_both_paths_apply_them(tmp_path, settings, shared_secret):
    """A field required unless another has a given value (Store Entered's token) and an object whose values
    are all of one type (Consent Updated's purposes) are facets of the schema's field specs, which the fast
    path's statement and the Python validator both read."""
    entered = EVENT_SCHEMAS["Store Entered"].properties["entry_token"]
    assert entered.required_unless == ("entry_method", "none")
    assert EVENT_SCHEMAS["Consent Updated"].properties["purposes"].values == "boolean"
    with pytest.raises(ValueError, match="values"):
        FieldSpec("string", values="boolean")
    store = b'"userId":"u1","originalTimestamp":"2026-09-01T10:00:00Z","context":{"channel":"store"}'
    base = b'"userId":"u1","originalTimestamp":"2026-09-01T10:00:00Z","context":{"channel":"web"}'

    def entered_line(message_id: bytes, properties: bytes) -> bytes:
        head = b'{"type":"track","event":"Store Entered","messageId":"' + message_id + b'",'
        return head + store + b',"properties":{"store_id":"S1",' + properties + b"}}"

    def consent_line(message_id: bytes, purposes: bytes) -> bytes:
        head = b'{"type":"track","event":"Consent Updated","messageId":"' + message_id + b'",'
        return head + base + b',"properties":{"purposes":' + purposes + b"}}"

    lines = [
        entered_line(b"s1", b'"entry_method":"palm"'),
        entered_line(b"s2", b'"entry_method":"palm","entry_token":""'),
        entered_line(b"s3", b'"entry_method":"none"'),
        entered_line(b"s4", b'"entry_method":"app_code","entry_token":"tok-123"'),
        consent_line(b"c1", b'{"analytics":true,"ads":"yes"}'),
        consent_line(b"c2", b'{"analytics":false,"personalisation":1}'),
        consent_line(b"c3", b'{"analytics":true,"personalisation":false}'),
        consent_line(b"c4", b"{}"),
    ]
    path = write_lines(tmp_path / "rules.jsonl", lines)
    fast, python = both_paths(tmp_path, settings, [path])
    assert fast[0].keys() == {"s3", "s4", "c3", "c4"}
    assert sorted(codes for codes, _ in fast[1].values()) == [
        ["invalid_type"],
        ["invalid_type"],
        ["missing_field"],
        ["missing_field"],
    ]
    assert_same(fast, python)


def test_a_message_id_repeated_across_both_paths_keeps_its_earliest_line(tmp_path, settings):
    """Lines the fast path stores and lines it leaves to Python go in together: per message id the
    earliest line wins, whichever path read it, and an id the log holds already is not stored again."""

    def line(message_id, user):  # a numeric userId is left to the Python path
        return {
            "type": "page",
            "messageId": message_id,
            "userId": user,
            "name": "Home",
            "originalTimestamp": "2026-09-01T10:00:00Z",
            "context": {"channel": "web"},
        }

    first = write_lines(tmp_path / "first.jsonl", [line("old", "u1")])
    lines = [
        line("a", 7),
        line("a", "u2"),
        line("b", "u3"),
        line("b", 8),
        line("c", "u4"),
        line("c", "u5"),
        line("old", "u6"),
    ]
    second = write_lines(tmp_path / "second.jsonl", lines)
    with Workspace(settings.with_(data_dir=tmp_path / "data", fast_path=True)) as ws:
        ws.ingestor().ingest_paths([first])
        report = ws.ingestor().ingest_paths([second])
        rows = {
            r["message_id"]: (r["user_id"], r["source"].rsplit(":", 1)[1])
            for r in ws.engine.rows("SELECT message_id, user_id, source FROM events")
        }
    assert rows == {"old": ("u1", "1"), "a": ("7", "1"), "b": ("u3", "3"), "c": ("u4", "5")}
    assert (report.accepted, report.duplicates) == (3, 4)


def test_file_chunks_hold_whole_lines_and_a_small_remainder_joins_the_last(tmp_path):
    from omnithread.ingest.bulk import line_chunks

    path = tmp_path / "lines.jsonl"
    lines = [f'{{"n":{i:05d}}}\n'.encode() for i in range(100)]  # 12 bytes each, 1,200 in all
    path.write_bytes(b"".join(lines))
    with open(path, "rb") as handle:
        chunks = list(line_chunks(handle, 400))
    assert len(chunks) == 3
    assert b"".join(data for _, data in chunks) == path.read_bytes()
    assert [first for first, _ in chunks] == [1] + [
        1 + sum(bytes(d).count(b"\n") for _, d in chunks[:i]) for i in range(1, len(chunks))
    ]
    with open(path, "rb") as handle:  # three reads of 390 bytes leave 30, which join the third chunk
        small_rest = list(line_chunks(handle, 390))
    assert len(small_rest) == 3 and b"".join(d for _, d in small_rest) == path.read_bytes()
    with open(path, "rb") as handle:  # a remainder over a quarter of a chunk stays a chunk of its own
        assert len(list(line_chunks(handle, 300))) == 4
    with open(path, "rb") as handle:
        assert len(list(line_chunks(handle, 350))) == 4  # 350 x 3, then 150 bytes
    # a last line without its newline comes whole, with one, whatever the chunk size
    path.write_bytes(b"".join(lines)[:-1])
    for size in (50, 400, 1 << 20):
        with open(path, "rb") as handle:
            assert b"".join(data for _, data in line_chunks(handle, size)) == b"".join(lines)


def test_a_batch_line_whose_one_event_is_stored_already_keeps_its_others(tmp_path, settings):
    """A line holding a Segment batch makes several rows with one line number: one stored event among
    them must not cost the others their place."""

    def event(message_id):
        return {
            "type": "page",
            "messageId": message_id,
            "userId": "u1",
            "name": "Home",
            "originalTimestamp": "2026-09-01T10:00:00Z",
            "context": {"channel": "web"},
        }

    first = write_lines(tmp_path / "first.jsonl", [event("b2")])
    second = write_lines(
        tmp_path / "second.jsonl", [event("x1"), {"batch": [event("b1"), event("b2"), event("b3")]}, event("b3")]
    )
    with Workspace(settings.with_(data_dir=tmp_path / "data", fast_path=True)) as ws:
        ws.ingestor().ingest_paths([first])
        report = ws.ingestor().ingest_paths([second])
        sources = {
            r["message_id"]: r["source"].rsplit(":", 1)[1]
            for r in ws.engine.rows("SELECT message_id, source FROM events")
        }
    assert sources == {"b2": "1", "x1": "1", "b1": "2#0", "b3": "2#2"}
    assert (report.accepted, report.duplicates) == (3, 2)


def test_chunk_lines_that_are_not_utf8_are_null_and_the_rest_intact():
    from omnithread.ingest.bulk import chunk_table

    lines = []
    for i in range(5000):  # accents in every seventh line, broken bytes at window edges and at the end
        if i % 7 == 0:
            lines.append(f'{{"n":"Zoë {i}"}}'.encode())
        elif i % 1024 in (0, 1023) or i == 4999:
            lines.append(b'{"n":"\xff\xfe"}')
        else:
            lines.append(b'{"n":%d}' % i)
    table, _ = chunk_table(1, b"\n".join(lines) + b"\n")
    raw = table.column("raw").to_pylist()
    broken = []
    for i, line in enumerate(lines):
        try:
            assert raw[i] == line.decode("utf-8") + "\n"
        except UnicodeDecodeError:
            broken.append(i)
            assert raw[i] is None
    assert broken == [i for i in range(5000) if i % 7 and (i % 1024 in (0, 1023) or i == 4999)]
    assert len(broken) == 8 and table.column("line_no").to_pylist() == list(range(1, 5001))


def _random_value(rng, depth: int = 0):
    roll = rng.random()
    if roll < 0.6 or depth > 1:
        return rng.choice(_SCALARS)
    if roll < 0.75:
        return [rng.choice(_SCALARS) for _ in range(rng.randrange(3))]
    if roll < 0.9:
        return [
            {k: rng.choice(_SCALARS) for k in rng.sample(["product_id", "price", "quantity", "name"], 2)}
            for _ in range(rng.randrange(3))
        ]
    return {k: _random_value(rng, depth + 1) for k in rng.sample(["analytics", "email", "phone", "ip"], 2)}


def random_events(seed: int, count: int) -> list[dict]:
    """``count`` calls drawn from the same pools as the ``events`` strategy above (and a few more spellings of
    identifiers), seeded: as many generated examples as a conformance run wants, at no cost to draw them."""
    import random

    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        call: dict = {"type": rng.choice(["track", "track", "identify", "page", "screen", "alias"])}
        optional = {
            "event": lambda: rng.choice(sorted(EVENT_SCHEMAS) + ["Custom Thing"]),
            "userId": lambda: rng.choice(["u1", "u2", "", "a@b.co", 7, "+447700900123"]),
            "anonymousId": lambda: rng.choice(["d1", "d2", "07700 900123"]),
            "messageId": lambda: f"m{rng.randrange(400)}",
            "properties": lambda: {k: _random_value(rng) for k in rng.sample(_KEYS, rng.randrange(6))},
            "traits": lambda: {k: _random_value(rng) for k in rng.sample(_KEYS, rng.randrange(6))},
            "context": lambda: {k: _random_value(rng) for k in rng.sample(_KEYS, rng.randrange(6))},
            "timestamp": lambda: rng.choice(
                [
                    "2026-09-01T10:00:00Z",
                    "2026-09-01T10:00:00.123456+02:00",
                    "2026-09-01 10:00",
                    "2031-01-01T00:00:00Z",
                    "x",
                ]
            ),
            "originalTimestamp": lambda: "2026-09-01T12:00:00.000Z",
            "sentAt": lambda: "2026-09-01T12:00:05.000Z",
            "receivedAt": lambda: rng.choice(["2026-09-01T10:00:06.000Z", "2026-09-01T10:00:06"]),
            "name": lambda: rng.choice(["Home", 3, "Welcome a@b.co"]),
            "extraField": lambda: 1,
        }
        for key, draw in optional.items():
            if rng.random() < 0.5:
                call[key] = draw()
        calls.append(call)
    return calls


@pytest.mark.parametrize("seed", [1, 2])
def test_five_hundred_generated_events_at_once_are_judged_and_stored_identically(
    tmp_path, settings, shared_secret, seed
):
    """600 generated calls in one file, twice: a rule one path states and the other misses shows up among them."""
    path = write_lines(tmp_path / "generated.jsonl", random_events(seed, 600))
    fast, python = both_paths(tmp_path, settings, [path])
    assert len(fast[0]) > 50 and len(fast[1]) > 100  # stored and refused alike
    assert_same(fast, python)


def test_real_world_segment_payloads_are_judged_and_stored_identically(tmp_path, settings, shared_secret):
    """Calls as Segment's own libraries send them (analytics.js, iOS, Android, Python, Node batches), with their
    full contexts, e-commerce events from the spec, store and voice events, escapes, skewed clocks."""
    corpus = Path(__file__).resolve().parents[1] / "data" / "segment_payloads.jsonl"
    fast, python = both_paths(tmp_path, settings, [corpus])
    assert len(fast[0]) >= 25
    assert_same(fast, python)
