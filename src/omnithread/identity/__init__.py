"""Connect: identifiers into persons, guarded against over-merging."""

from omnithread.identity.config import NODE_TYPES, IdentityConfig
from omnithread.identity.evaluate import connection_summary, evaluate_against_truth
from omnithread.identity.incremental import UpdateReport, remove_identifier, remove_link, update_identities
from omnithread.identity.lookup import describe_person, find_person, own_identifiers
from omnithread.identity.resolve import ResolveReport, forget_persons, resolve_identities

__all__ = [
    "IdentityConfig",
    "NODE_TYPES",
    "ResolveReport",
    "connection_summary",
    "describe_person",
    "evaluate_against_truth",
    "find_person",
    "forget_persons",
    "own_identifiers",
    "remove_identifier",
    "remove_link",
    "resolve_identities",
    "update_identities",
    "UpdateReport",
]
