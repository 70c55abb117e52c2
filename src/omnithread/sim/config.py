"""The shape of a simulated retailer: sizes, habits and noise, all seeded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date

from omnithread.errors import ConfigError

__all__ = ["WorldConfig"]


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a simulated world; the same config gives the same files.

    Rates are per person per day. ``holdout_days`` follow the observed period:
    what people buy then is written only to the ground truth, as the future a
    recommender must predict.
    """

    seed: int = 7
    people: int = 3_000
    # numbering of the first person: shards of one large retailer take consecutive ranges, so
    # their person ids and email addresses do not collide (see benchmarks/identity_scale.py)
    first_person: int = 0
    days: int = 60
    start: date = date(2026, 9, 1)
    holdout_days: int = 14
    products: int = 600
    till_stores: int = 3
    checkout_free_stores: int = 1
    # channel habit shares: online only, store only, both
    online_only: float = 0.35
    store_only: float = 0.30
    member_share: float = 0.25
    session_rate: float = 0.12
    member_session_boost: float = 1.6
    store_visit_rate: float = 0.10
    voice_share: float = 0.08
    voice_order_rate: float = 0.04
    # how people differ and leave (both off by default, so a seed's files stay as they were): each person's
    # rates multiplied by a draw of mean 1 from a Gamma of variance ``rate_spread`` (0: everyone alike), and
    # each person gone for good after an exponential time of ``churn_rate`` per day (0: nobody leaves);
    # lifetime value is validated on worlds with both (benchmarks/clv.py)
    rate_spread: float = 0.0
    churn_rate: float = 0.0
    loyalty_card_share: float = 0.75
    forgot_card_rate: float = 0.30
    cash_rate: float = 0.20
    palm_share: float = 0.25
    card_link_share: float = 0.30
    shared_device_share: float = 0.30
    shared_card_share: float = 0.30
    # noise
    typo_rate: float = 0.20
    duplicate_rate: float = 0.01
    malformed_rate: float = 0.002
    skewed_device_share: float = 0.10
    out_of_order_share: float = 0.03

    def __post_init__(self) -> None:
        if self.first_person < 0:
            raise ConfigError("first_person", self.first_person, "at least 0")
        for name in ("people", "days", "products"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "at least 1")
        if self.till_stores + self.checkout_free_stores < 1:
            raise ConfigError("till_stores", self.till_stores, "at least one store of any kind")
        for name, value in asdict(self).items():
            if (
                name.endswith("_share")
                or name.endswith("_rate")
                and "session" not in name
                and "visit" not in name
                and "order" not in name
            ) and not 0 <= value <= 1:
                raise ConfigError(name, value, "a share between 0 and 1")
        for name in ("rate_spread", "churn_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), "at least 0")
        if self.online_only + self.store_only > 1:
            raise ConfigError("online_only", self.online_only, "online_only + store_only at most 1")

    @classmethod
    def demo(cls, **changes) -> "WorldConfig":
        """A small retailer for the demo: a few thousand people, a few stores, two months."""
        return replace(cls(), **changes)

    @classmethod
    def hard(cls, **changes) -> "WorldConfig":
        """More noise: more typos, forgotten cards, shared devices and cards, skewed clocks."""
        return replace(
            cls(
                typo_rate=0.45,
                forgot_card_rate=0.5,
                shared_device_share=0.6,
                shared_card_share=0.6,
                skewed_device_share=0.3,
                duplicate_rate=0.03,
                malformed_rate=0.01,
            ),
            **changes,
        )

    def with_(self, **changes) -> "WorldConfig":
        return replace(self, **changes)
