"""Import of files and payloads into the event log."""

from omnithread.ingest.pipeline import FileReport, Ingestor, IngestReport
from omnithread.ingest.replay import replay_rejected
from omnithread.ingest.till import TILL_COLUMNS, TILL_OPTIONAL_COLUMNS

__all__ = ["FileReport", "IngestReport", "Ingestor", "replay_rejected", "TILL_COLUMNS", "TILL_OPTIONAL_COLUMNS"]
