"""The tables' declarations and the named rows written into them agree."""

from omnithread.engine.tables import EVENT_COLUMNS, REJECTED_COLUMNS, EventRow, RejectedRow


def test_an_event_row_has_exactly_the_event_logs_columns_in_order():
    assert list(EventRow._fields) == [name for name, _, _ in EVENT_COLUMNS]


def test_a_rejected_row_has_exactly_the_rejected_tables_columns_in_order():
    assert list(RejectedRow._fields) == [name for name, _, _ in REJECTED_COLUMNS]


def test_every_table_a_full_run_leaves_is_declared_in_one_place(small_world, settings):
    """Ingest, catalogue, resolve (with matching), profiles, training, erasure: every table left in the
    database is one the engine declares (TABLES) or one of the stages' tables listed with its owner."""
    from pathlib import Path

    from omnithread.engine.tables import STAGE_TABLES, TABLES
    from omnithread.flows import erase, resolve_persons
    from omnithread.recommend.service import Recommendations
    from omnithread.workspace import Workspace

    out, manifest = small_world
    with Workspace(settings) as ws:
        ws.ingestor().ingest_paths(manifest["sources"])
        for kind in ("catalogue", "inventory"):
            ws.ingestor().ingest_reference([Path(manifest["reference"][kind])], kind)
        resolve_persons(ws)
        Recommendations.train(ws.engine, ws.pseudonymiser, settings.data_dir / "models", tune_days=None)
        account = ws.engine.scalar(
            "SELECT split_part(identifier, ':', 2) FROM identity_map "
            "WHERE identifier LIKE 'account:%' ORDER BY 1 LIMIT 1"
        )
        erase(ws, account, "suppress_and_delete")
        tables = {r["table_name"] for r in ws.engine.rows("SELECT table_name FROM duckdb_tables() WHERE NOT temporary")}
    assert tables - set(TABLES) - set(STAGE_TABLES) == set()
    assert {"events", "identity_map", "profiles", "interactions", "suppressed_identifiers", "catalogue"} <= tables
