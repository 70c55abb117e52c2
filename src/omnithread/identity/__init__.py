"""Connect: identifiers into persons, guarded against over-merging."""

from omnithread.identity.config import NODE_TYPES, IdentityConfig
from omnithread.identity.resolve import ResolveReport, resolve_identities

__all__ = ["IdentityConfig", "NODE_TYPES", "ResolveReport", "resolve_identities"]
