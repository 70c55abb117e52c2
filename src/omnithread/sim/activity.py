"""What simulated people do: online sessions, store visits and voice orders, as arrays.

Everything is drawn vectorised from one generator; a row of a table is one
session, view, visit or line. Times are seconds since the Unix epoch (UTC) and
run over the observed days plus the hold-out days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timezone

import numpy as np

from omnithread.sim.world import CATEGORIES, CHANNEL_MIX, CHANNEL_ROW, World

__all__ = ["Activity", "simulate_activity", "sample_products"]

# share of the day's activity by hour (UTC), peaking at lunch and in the evening
_HOURS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 7, 8, 9, 8, 7, 7, 8, 9, 10, 10, 8, 6, 4, 2], dtype=float)
_HOURS /= _HOURS.sum()


@dataclass
class Activity:
    start_epoch: float
    end_observed: float
    sessions: dict  # person, at, slot, channel (0 web, 1 app), logged_in
    views: dict  # session, product, added, removed
    visits: dict  # person, at, store, checkout_free
    lines: dict  # visit, product, quantity, returned (picked then put back, not bought)
    voice: dict  # person, at
    voice_lines: dict  # order, product, quantity


def sample_products(
    world: World, persons: np.ndarray, channel_rows: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One product per row, drawn from the person's tastes on that channel (Gumbel-max)."""
    n_cat = len(CATEGORIES)
    weights = world.category_pref[persons] * CHANNEL_MIX[channel_rows]
    weights /= weights.sum(axis=1, keepdims=True)
    cats = (weights.cumsum(axis=1) < rng.random(len(persons))[:, None]).sum(axis=1).clip(max=n_cat - 1)
    out = np.empty(len(persons), dtype=np.int64)
    for c in range(n_cat):
        rows = np.nonzero(cats == c)[0]
        if not len(rows):
            continue
        products = np.nonzero(world.product_category == c)[0]
        if not len(products):
            products = np.arange(len(world.product_ids))
        for chunk in np.array_split(rows, max(1, len(rows) // 40_000)):
            scores = world.product_pop[products] + world.taste[persons[chunk]] @ world.product_vec[products].T
            scores += rng.gumbel(size=scores.shape)
            out[chunk] = products[np.argmax(scores, axis=1)]
    return out


def _habits(world: World) -> tuple[np.ndarray, np.ndarray | None]:
    """Each person's rate multiplier and the days they stay (None: everyone stays throughout), drawn from a
    generator of their own so that a world without them gets the same draws as before they existed."""
    cfg = world.config
    if not cfg.rate_spread and not cfg.churn_rate:
        return np.ones(cfg.people), None
    rng = np.random.default_rng([cfg.seed, 2])
    spread = cfg.rate_spread
    multiplier = rng.gamma(1 / spread, spread, cfg.people) if spread else np.ones(cfg.people)
    stays = rng.exponential(1 / cfg.churn_rate, cfg.people) if cfg.churn_rate else None
    return multiplier, stays


def _counts(world: World, rng: np.random.Generator, rate: np.ndarray, days: int) -> np.ndarray:
    """How many times each person does a thing at ``rate`` a day, over the days they stay."""
    multiplier, stays = _habits(world)
    span = days if stays is None else np.minimum(stays, days)
    return rng.poisson(rate * multiplier * span)


def _times(
    rng: np.random.Generator, count: int, start: float, days: int, person: np.ndarray | None = None, world=None
) -> np.ndarray:
    stays = None if world is None else _habits(world)[1]
    if stays is None or person is None:
        day = rng.integers(0, days, count)
    else:  # within the days each person stays
        day = np.floor(rng.random(count) * np.minimum(stays[person], days)).astype(np.int64)
    hour = rng.choice(24, size=count, p=_HOURS)
    return start + day * 86400.0 + hour * 3600.0 + rng.random(count) * 3600.0


def _online(world: World, rng: np.random.Generator, start: float, days: int):
    cfg = world.config
    rate = np.where(world.online, cfg.session_rate, 0.0) * np.where(world.member, cfg.member_session_boost, 1.0)
    counts = _counts(world, rng, rate, days)
    person = np.repeat(np.arange(cfg.people), counts)
    at = _times(rng, len(person), start, days, person, world)
    n_dev = (world.devices != "").sum(axis=1)[person]
    slot = (rng.random(len(person)) * np.maximum(n_dev, 1)).astype(np.int64)
    channel = world.device_kind[person, slot]
    logged_in = rng.random(len(person)) < 0.65
    sessions = {"person": person, "at": at, "slot": slot, "channel": channel, "logged_in": logged_in}
    n_views = 1 + rng.poisson(3, len(person))
    session = np.repeat(np.arange(len(person)), n_views)
    product = sample_products(world, person[session], channel[session], rng)
    added = rng.random(len(session)) < 0.3
    removed = added & (rng.random(len(session)) < 0.15)
    views = {"session": session, "product": product, "added": added, "removed": removed}
    return sessions, views


def _stores(world: World, rng: np.random.Generator, start: float, days: int):
    cfg = world.config
    rate = np.where(world.in_store, cfg.store_visit_rate, 0.0)
    counts = _counts(world, rng, rate, days)
    person = np.repeat(np.arange(cfg.people), counts)
    at = _times(rng, len(person), start, days, person, world)
    n_stores = len(world.store_ids)
    store = np.where(rng.random(len(person)) < 0.8, world.home_store[person], rng.integers(0, n_stores, len(person)))
    checkout_free = world.store_checkout_free[store]
    visits = {"person": person, "at": at, "store": store, "checkout_free": checkout_free}
    n_lines = 1 + rng.poisson(4, len(person))
    visit = np.repeat(np.arange(len(person)), n_lines)
    product = sample_products(world, person[visit], np.full(len(visit), CHANNEL_ROW["store"]), rng)
    quantity = np.where(rng.random(len(visit)) < 0.2, 2, 1)
    # In checkout-free stores some picks go back on the shelf: interest the till never sees.
    extra_visit = np.nonzero(checkout_free & (rng.random(len(person)) < 0.35))[0]
    extra_product = sample_products(world, person[extra_visit], np.full(len(extra_visit), CHANNEL_ROW["store"]), rng)
    lines = {
        "visit": np.r_[visit, extra_visit],
        "product": np.r_[product, extra_product],
        "quantity": np.r_[quantity, np.ones(len(extra_visit), dtype=np.int64)],
        "returned": np.r_[np.zeros(len(visit), bool), np.ones(len(extra_visit), bool)],
    }
    order = np.lexsort((lines["returned"], lines["visit"]))
    lines = {k: v[order] for k, v in lines.items()}
    return visits, lines


def _voice(world: World, rng: np.random.Generator, start: float, days: int):
    cfg = world.config
    rate = np.where(world.voice_device != "", cfg.voice_order_rate, 0.0)
    person = np.repeat(np.arange(cfg.people), _counts(world, rng, rate, days))
    at = _times(rng, len(person), start, days, person, world)
    n_lines = rng.integers(1, 4, len(person))
    order = np.repeat(np.arange(len(person)), n_lines)
    product = sample_products(world, person[order], np.full(len(order), CHANNEL_ROW["voice"]), rng)
    return {"person": person, "at": at}, {"order": order, "product": product, "quantity": np.ones(len(order), np.int64)}


def simulate_activity(world: World, rng: np.random.Generator) -> Activity:
    """Everything the people of ``world`` do over the observed and hold-out days."""
    cfg = world.config
    start = datetime.combine(cfg.start, time(0), tzinfo=timezone.utc).timestamp()
    days = cfg.days + cfg.holdout_days
    sessions, views = _online(world, rng, start, days)
    visits, lines = _stores(world, rng, start, days)
    voice, voice_lines = _voice(world, rng, start, days)
    return Activity(start, start + cfg.days * 86400.0, sessions, views, visits, lines, voice, voice_lines)
