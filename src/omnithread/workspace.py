"""A data directory opened for work: its engine, event log and privacy keys.

The edges (CLI, API) open one from the settings and pass its parts to the stages.
"""

from __future__ import annotations

from datetime import datetime

from omnithread.config import Settings
from omnithread.engine import EventLog, open_engine
from omnithread.ingest import Ingestor
from omnithread.privacy import PayloadCipher, Pseudonymiser, load_secret
from omnithread.privacy.files import private_directory
from omnithread.privacy.suppression import SuppressionList

__all__ = ["Workspace"]


class Workspace:
    """Everything a command needs over one data directory.

    >>> import tempfile
    >>> with Workspace(Settings(data_dir=tempfile.mkdtemp())) as ws:
    ...     ws.log.count()
    0
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        private_directory(settings.data_dir)
        secret = load_secret(settings.data_dir)
        self.pseudonymiser = Pseudonymiser(secret, settings.phone_region, settings.ip_mode)
        self.cipher = PayloadCipher(secret)
        self.engine = open_engine(settings)
        self.suppression = SuppressionList(self.engine)
        self.log = EventLog(self.engine, self.suppression)

    def ingestor(self, received_at: datetime | None = None) -> Ingestor:
        return Ingestor(self.log, self.pseudonymiser, self.cipher, self.settings, received_at)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
