from pathlib import Path

from omnithread.events import EVENT_SCHEMAS
from omnithread.events.docs import render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_docs_events_md_is_the_rendered_schema():
    assert DOCS.read_text() == render_markdown(), "run: python -m omnithread.events.docs > docs/events.md"


def test_every_event_and_property_is_documented():
    text = DOCS.read_text()
    for name, schema in EVENT_SCHEMAS.items():
        assert f"### {name} (version {schema.version})" in text
        for field in schema.properties:
            assert f"| `{field}` |" in text
