"""Guards against over-merging, per identifier type, as configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from omnithread.errors import ConfigError

__all__ = ["IdentityConfig", "NODE_TYPES"]

# Node types, strongest first: an edge is as strong as its weaker end, and stronger edges are kept
# first when a merge would break a limit.
NODE_TYPES = (
    "account",
    "email",
    "phone",
    "app_code",
    "loyalty_card",
    "palm_token",
    "payment_token",
    "voice_device",
    "device",
    "store_session",
)


@dataclass(frozen=True)
class IdentityConfig:
    """How identifiers may join into persons.

    ``limits``: at most this many identifiers of a type in one person (a merge that would
    break a limit is refused and the weakest link dropped). ``max_accounts``: an identifier
    linked directly to more accounts than this is blocked as implausible (a shared family
    card, a store's demo tablet). ``blocked_values``: values that never identify anyone,
    matched after the type prefix (raw ids) or as keyed hashes (hashed types, see
    :func:`omnithread.identity.resolve.blocked_hashes`). ``priority``: node types, strongest first.
    ``match_threshold``: the match probability above which records with no shared key (store
    sign-ups, account profiles) are linked by the probabilistic matcher; None turns it off.
    """

    limits: dict[str, int] = field(
        default_factory=lambda: {
            "account": 1,
            "email": 5,
            "phone": 1,
            "app_code": 1,
            "loyalty_card": 1,
            "palm_token": 2,
            "payment_token": 10,
            "voice_device": 3,
            "device": 20,
        }
    )
    max_accounts: dict[str, int] = field(
        default_factory=lambda: {
            "email": 2,
            "phone": 4,
            "app_code": 1,
            "loyalty_card": 4,
            "palm_token": 1,
            "payment_token": 1,
            "voice_device": 4,
            "device": 6,
            "store_session": 1,
        }
    )
    blocked_values: tuple[str, ...] = (
        "",
        "null",
        "none",
        "nil",
        "undefined",
        "anonymous",
        "unknown",
        "-1",
        "0",
        "test",
        "n/a",
    )
    blocked_raw: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "email": (
                "test@test.com",
                "test@example.com",
                "noreply@example.com",
                "no-reply@example.com",
                "none@none.com",
                "a@a.com",
            ),
            "phone": ("+440000000000", "+441234567890", "+10000000000"),
            "loyalty_card": ("000000", "0000000000", "1234567890"),
        }
    )
    priority: tuple[str, ...] = NODE_TYPES
    match_threshold: float | None = 0.999  # chosen on the simulated retailer: see docs/identity.md

    def __post_init__(self) -> None:
        for name in ("limits", "max_accounts"):
            for kind, value in getattr(self, name).items():
                if kind not in NODE_TYPES:
                    raise ConfigError(f"{name}.{kind}", kind, f"one of {', '.join(NODE_TYPES)}")
                if not isinstance(value, int) or value < 1:
                    raise ConfigError(f"{name}.{kind}", value, "an integer of at least 1")
        if self.match_threshold is not None and not 0 < self.match_threshold < 1:
            raise ConfigError("match_threshold", self.match_threshold, "a probability between 0 and 1, or None")
        if sorted(self.priority) != sorted(NODE_TYPES):
            raise ConfigError("priority", self.priority, f"an ordering of {', '.join(NODE_TYPES)}")

    def rank(self, kind: str) -> int:
        return self.priority.index(kind)
