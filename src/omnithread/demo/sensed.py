"""Checkout-free trips of the simulated retailer, sensed: shelf, camera and gate signals run through the
sensing engine, whose receipts and interest events become the store's events.

The retailer's trips happen over weeks (optionally only the last ``last_days`` of them are sensed); a store's
sensors would report every idle hour too. To keep the demo quick, the trips of each store are played in busy
sessions of ``session_trips`` trips, a new shopper through the gate every ``spacing`` seconds (denser than the
real day, so harder for the engine, never easier), with the shelves restocked between sessions. Each trip's
events are then moved back to the trip's real time. What the engine got wrong stays wrong: the truth (orders,
future purchases) is what the shoppers really took, so later stages see sensing errors as they would in a real
store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from omnithread.sensing import SensingConfig, SensingEngine, generate_layout
from omnithread.sim.render import IdealStoreEvents, StoreVisit
from omnithread.sim.sensors import Action, Scene, SensorNoise, ShopperPlan, render_scene

__all__ = ["SensedStoreEvents"]


def _shift(stamp: str, seconds: float) -> str:
    t = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SensedStoreEvents:
    """A :class:`~omnithread.sim.StoreEventLayer` that senses each checkout-free trip.

    With ``last_days``, only the trips of the last days of the observed period are sensed (the sensing
    is the slow part of a simulation); earlier trips come as the store's receipt history, as they
    happened."""

    def __init__(
        self,
        *,
        last_days: float | None = None,
        session_trips: int = 40,
        spacing: float = 8.0,
        noise: SensorNoise = SensorNoise(),
        config: SensingConfig = SensingConfig(),
        gondolas: int = 6,
        seed: int = 0,
    ):
        self.last_days = last_days
        self.session_trips, self.spacing, self.noise, self.config = session_trips, spacing, noise, config
        self.gondolas, self.seed = gondolas, seed
        self.visits: list[StoreVisit] = []
        self.history = IdealStoreEvents()
        self.unsensed = 0
        self.plate_messages = 0
        self.camera_observations = 0
        self.scores = {"trips": 0, "exact": 0, "matched": 0, "predicted": 0, "actual": 0, "review": 0}
        self.layouts = {}
        self.receipts = []
        self.problems = []
        self.weight_events = 0

    def begin(self, world) -> None:
        self.world = world
        cfg = world.config
        end = datetime(cfg.start.year, cfg.start.month, cfg.start.day, tzinfo=UTC).timestamp() + cfg.days * 86400.0
        self.sensed_from = -np.inf if self.last_days is None else end - self.last_days * 86400.0

    def visit_events(self, visit: StoreVisit) -> list[dict]:
        if visit.entered_at < self.sensed_from:  # before the sensors were switched on: the store's receipt history
            self.unsensed += 1
            return self.history.visit_events(visit)
        self.visits.append(visit)
        return []

    def summary(self) -> dict:
        """How the sensed trips went, against what the shoppers really took."""
        sc = self.scores
        p = sc["matched"] / sc["predicted"] if sc["predicted"] else 1.0
        r = sc["matched"] / sc["actual"] if sc["actual"] else 1.0
        return {
            "trips_sensed": sc["trips"],
            "trips_from_history": self.unsensed,
            "plate_messages": self.plate_messages,
            "camera_observations": self.camera_observations,
            "weight_events": self.weight_events,
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "exact_receipts": round(sc["exact"] / sc["trips"], 4) if sc["trips"] else None,
            "review_share": round(sc["review"] / sc["trips"], 4) if sc["trips"] else None,
            "sensor_problems": len(self.problems),
        }

    def layout_for(self, store_id: str):
        if store_id not in self.layouts:
            w = self.world
            per_plate = 2
            plates = int(np.ceil(len(w.product_ids) / per_plate))
            shelves, per_shelf = 5, 10
            gondolas = max(self.gondolas, int(np.ceil(plates / (shelves * per_shelf))))
            self.layouts[store_id], _ = generate_layout(
                store_id,
                w.product_ids.tolist(),
                w.product_weight.tolist(),
                w.product_price.tolist(),
                gondolas=gondolas,
                shelves=shelves,
                plates_per_shelf=per_shelf,
                facings_per_plate=per_plate,
                seed=self.seed,
                stock=20,
            )
        return self.layouts[store_id]

    def _plan(self, visit: StoreVisit, layout, at: float, rng: np.random.Generator) -> ShopperPlan:
        actions, later = [], []
        for product, quantity, _price, returned in visit.lines:
            home = layout.home.get(product)
            if not home:
                continue
            plate, x = home[0]
            actions.append(Action("pick", plate, x, product, int(quantity)))
            if returned:
                later.append(Action("return", plate, x, product, int(quantity)))
        for act in later:  # a put-back comes a little later in the trip
            actions.insert(
                int(
                    rng.integers(
                        actions.index(next(a for a in actions if a.product == act.product and a.kind == "pick")) + 1,
                        len(actions) + 1,
                    )
                ),
                act,
            )
        token = visit.entry_token if visit.entry_method != "none" else None
        return ShopperPlan(
            visit.visit_id, at, actions, entry_method=visit.entry_method, entry_token=token, visit_id=visit.visit_id
        )

    def finish(self) -> list[dict]:
        rng = np.random.default_rng([self.seed, 97])
        events = []
        by_store: dict[str, list[StoreVisit]] = {}
        for v in sorted(self.visits, key=lambda v: v.entered_at):
            by_store.setdefault(v.store_id, []).append(v)
        for store_id, visits in by_store.items():
            layout = self.layout_for(store_id)
            for s in range(0, len(visits), self.session_trips):
                batch = visits[s : s + self.session_trips]
                start = float(np.floor(batch[0].entered_at))
                plans = [self._plan(v, layout, start + k * self.spacing, rng) for k, v in enumerate(batch)]
                offset = {v.visit_id: v.entered_at - p.enter_at for v, p in zip(batch, plans)}
                payment = {v.visit_id: v.payment_token for v in batch}
                signals = render_scene(Scene(layout, plans, start, seed=self.seed * 100_003 + s), self.noise)
                engine = SensingEngine(layout, self.config)
                signals.feed(engine)
                receipts = engine.close()
                self.plate_messages += int(signals.plate_samples.shape[0] * signals.plate_samples.shape[1])
                self.camera_observations += sum(len(f["tracks"]) for f in signals.frames)
                got = {r.visit_id: r for r in receipts}
                for trip in signals.truth["trips"]:
                    r = got.get(trip["visit_id"])
                    guess = r.basket if r else {}
                    sc = self.scores
                    sc["trips"] += 1
                    sc["exact"] += guess == trip["cart"]
                    sc["review"] += bool(r and r.review)
                    sc["matched"] += sum(min(q, guess.get(p, 0)) for p, q in trip["cart"].items())
                    sc["predicted"] += sum(guess.values())
                    sc["actual"] += sum(trip["cart"].values())
                self.receipts.extend(receipts)
                self.problems.extend(engine.problems)
                self.weight_events += len(engine.weight_events)
                for receipt in receipts:
                    shift = offset.get(receipt.visit_id, 0.0)
                    for ev in receipt.events:
                        ev = dict(ev, timestamp=_shift(ev["timestamp"], shift))
                        if ev["event"] == "Order Completed" and payment.get(receipt.visit_id):
                            ev["properties"] = dict(ev["properties"], payment_token=payment[receipt.visit_id])
                        events.append(ev)
        return events
