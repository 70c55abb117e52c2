"""The tables' declarations and the named rows written into them agree."""

from omnithread.engine.tables import EVENT_COLUMNS, REJECTED_COLUMNS, EventRow, RejectedRow


def test_an_event_row_has_exactly_the_event_logs_columns_in_order():
    assert list(EventRow._fields) == [name for name, _, _ in EVENT_COLUMNS]


def test_a_rejected_row_has_exactly_the_rejected_tables_columns_in_order():
    assert list(RejectedRow._fields) == [name for name, _, _ in REJECTED_COLUMNS]
