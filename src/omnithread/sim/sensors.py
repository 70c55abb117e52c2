"""The sensor layer of the simulated retailer: what a checkout-free store's gate, ceiling cameras and
shelf weight plates report while shoppers walk, pick, put back and carry products.

A :class:`Scene` is a set of shopper plans in one store layout. :func:`render_scene` plays it out and
returns the signals (gate messages, camera frames at 15 Hz, plate samples at 60 Hz in messages of a
dozen) and, apart from them, the truth: every real pick and return and each trip's real cart.

What the signals carry, and what makes them hard:

* plates drift slowly (a random walk of a few grams over minutes) and add sensor noise to every
  sample; a hand touching a plate presses on it, so the weight only settles at its new level once the
  hand has left; a hand may also rest on a plate without taking anything;
* cameras report each tracked person's head and both hands with a few centimetres of noise, lose
  people for single frames and for occlusions of up to a second or two, and, when two people pass
  close, may swap their track ids (the appearance vector each observation carries stays the
  person's own, as a re-identification model's embedding would);
* the gate reports entries (with the identity shown: app code, palm, payment card, or a group
  entering on one person's identity) and exits, by track id.

The scenario families of :func:`scenario` build the hard cases on purpose: two shoppers at one shelf,
hands crossing, items put back on the wrong plate and later taken by someone else, products of the
same weight side by side, several units at once, hands resting on plates, items handed to a companion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omnithread.sensing.layout import AISLE, FRONT, GATE, Layout, generate_layout

__all__ = [
    "Action",
    "ShopperPlan",
    "Scene",
    "Signals",
    "SensorNoise",
    "render_scene",
    "scenario",
    "FAMILIES",
    "scenario_layout",
]

HZ_PLATE, PER_MESSAGE, HZ_CAMERA = 60, 12, 15
TICK = PER_MESSAGE / HZ_PLATE  # seconds a plate message covers
WALK = 1.1  # metres a second
FAMILIES = ("simple", "crowded", "misplaced", "same_weight", "handoff")


@dataclass
class Action:
    """One thing a shopper does at a plate.

    ``kind`` is ``pick``, ``return`` (put units back on ``plate``, the product's home or not),
    ``rest`` (a hand on the plate, nothing taken) or ``handoff`` (give ``product`` to ``to``).
    ``stand_x`` places the shopper elsewhere than in front of the plate (hands crossing).
    """

    kind: str
    plate: int = -1
    x: float = 0.0
    product: str | None = None
    units: int = 1
    stand_x: float | None = None
    to: str | None = None
    wait: float = 0.0  # seconds to wait before this action (to meet someone's schedule)
    not_before: float = 0.0  # absolute time before which the action may not start


@dataclass
class ShopperPlan:
    """One person's trip. Companions name the payer they entered with in ``group_with``. With
    ``never_exits`` the person walks out but the gate misses it (tailgating, a gate fault): no exit
    message, the track just ends."""

    shopper: str
    enter_at: float
    actions: list[Action]
    entry_method: str = "app_code"
    entry_token: str | None = None
    group_with: str | None = None
    visit_id: str | None = None
    never_exits: bool = False


@dataclass
class Scene:
    layout: Layout
    shoppers: list[ShopperPlan]
    start: float
    seed: int = 0


@dataclass(frozen=True)
class SensorNoise:
    plate_noise: float = 1.0  # grams, per sample
    drift_step: float = 0.04  # grams per plate message, random walk
    press_mean: float = 35.0  # grams a touching hand adds
    press_noise: float = 30.0
    rest_weight: tuple[float, float] = (250.0, 900.0)
    unit_spread: float = 0.01  # each unit's weight varies this share around the product's
    position_noise: float = 0.03  # metres, camera
    dropout: float = 0.03  # share of single observations lost
    occlusion_rate: float = 0.01  # occlusions started per observation
    switch_chance: float = 0.5  # chance two people passing within switch_distance swap track ids
    switch_distance: float = 0.7
    appearance_noise: float = 0.3


@dataclass
class Signals:
    """What the sensors sent, in time order, and the truth kept apart from it."""

    layout: Layout
    start: float
    end: float
    plate_t: np.ndarray  # (ticks,) start time of each plate message
    plate_samples: np.ndarray  # (plates, ticks, 12) grams, float32
    frames: list[dict]  # camera frames, each {"t", "seq", "tracks": [...]}
    gate: list[dict]
    truth: dict

    def messages(self, *, shuffle: float = 0.0, duplicates: float = 0.0, seed: int = 0):
        """Every message as the wire carries it, ordered by time; optionally delivered a little out of
        order (each message delayed up to ``shuffle`` seconds) and with ``duplicates`` of them twice."""
        out = []
        for msg in self.gate:
            out.append((msg["t"], 0, msg))
        for frame in self.frames:
            out.append((frame["t"], 1, dict(kind="frame", camera="ceiling", **frame)))
        ids = self.layout.plate_ids
        for k, t in enumerate(self.plate_t.tolist()):
            block = np.round(self.plate_samples[:, k, :], 1).tolist()
            for p, samples in enumerate(block):
                out.append(
                    (t, 2, {"kind": "plate", "plate_id": ids[p], "seq": k, "t": round(t, 3), "samples": samples})
                )
        out.sort(key=lambda r: (r[0], r[1]))
        if shuffle or duplicates:
            rng = np.random.default_rng([seed, 77])
            delay = rng.random(len(out)) * shuffle
            order = np.argsort([r[0] + d for r, d in zip(out, delay)], kind="stable")
            again = rng.random(len(out)) < duplicates
            result = []
            for i in order.tolist():
                result.append(out[i][2])
                if again[i]:
                    result.append(out[i][2])
            return result
        return [r[2] for r in out]

    def feed(self, engine, *, wire: bool = False, **delivery) -> None:
        """Send everything to a sensing engine in time order. ``wire`` sends every plate message as its own
        dict (as the wire does; see :meth:`messages` for ``delivery`` noise); otherwise each tick of all
        plates goes as one gateway batch."""
        if wire or delivery:
            engine.feed_many(self.messages(**delivery))
            return
        others = sorted(
            [(m["t"], 0, m) for m in self.gate]
            + [(f["t"], 1, dict(kind="frame", camera="ceiling", **f)) for f in self.frames],
            key=lambda r: (r[0], r[1]),
        )
        i = 0
        for k, t in enumerate(self.plate_t.tolist()):
            while i < len(others) and others[i][0] <= t:
                engine.feed(others[i][2])
                i += 1
            engine.feed_block(t, self.plate_samples[:, k, :])
        for _, _, m in others[i:]:
            engine.feed(m)

    @property
    def message_rate(self) -> float:
        """Messages a second the store produces (plates, frames and gate)."""
        seconds = max(self.end - self.start, 1e-9)
        return (self.plate_samples.shape[0] * self.plate_samples.shape[1] + len(self.frames) + len(self.gate)) / seconds


@dataclass
class _Timeline:
    waypoints: list[tuple[float, float, float]] = field(default_factory=list)  # t, x, y
    reaches: list[tuple[float, float, float, np.ndarray, int]] = field(default_factory=list)  # t0, ta, tb, point, hand
    exit_at: float = 0.0


def _route(layout: Layout, a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
    """Walk from ``a`` to ``b`` along aisles: to the aisle head, across, and along."""
    aisle_a, aisle_b = int(np.floor(a[1] / AISLE)), int(np.floor(b[1] / AISLE))
    if aisle_a == aisle_b and a[0] > -0.5 and b[0] > -0.5:
        return [b]
    head = -0.8
    return [(head, a[1]), (head, b[1]), b]


def _plan_timelines(scene: Scene, rng: np.random.Generator, noise: SensorNoise):
    """Turn plans into timelines, plate changes and truth; no two hands on one plate at once."""
    layout = scene.layout
    busy: dict[int, list[tuple[float, float]]] = {}
    stock, arrived = {}, {}
    for p, fs in enumerate(layout.facings):
        for f in fs:
            stock[(p, f.product_id)] = f.stock
    changes, touches, events = [], [], []  # (plate, t, delta), (plate, ta, tb, kind, extra), truth events
    carts: dict[str, dict[str, int]] = {}
    timelines = {}
    payer = {s.shopper: (s.group_with or s.shopper) for s in scene.shoppers}
    sessions = {}
    for plan in sorted(scene.shoppers, key=lambda s: s.enter_at):
        tl = _Timeline()
        t, pos = plan.enter_at, GATE
        tl.waypoints.append((t, *pos))
        session = payer[plan.shopper]
        cart = carts.setdefault(session, {})
        for act in plan.actions:
            t = max(t + act.wait, act.not_before - 8.0)
            if act.kind == "handoff":
                partner = timelines.get(act.to)
                target = (pos[0] + 0.4, pos[1]) if partner is None else pos
                t += 1.5
                tl.waypoints.append((t, *target))
                events.append(
                    {
                        "kind": "handoff",
                        "t": t,
                        "shopper": plan.shopper,
                        "to": act.to,
                        "product": act.product,
                        "session": session,
                    }
                )
                continue
            stand_x = act.x if act.stand_x is None else act.stand_x
            stand = (stand_x, layout.plate_gondola[act.plate] * AISLE + FRONT + 0.7)
            for point in _route(layout, pos, stand):
                dist = float(np.hypot(point[0] - pos[0], point[1] - pos[1]))
                t += dist / WALK
                tl.waypoints.append((t, *point))
                pos = point
            handle = rng.uniform(2.0, 4.0) if act.kind == "rest" else rng.uniform(0.6, 1.2)
            key = (act.plate, act.product)
            if act.kind == "pick" and stock.get(key, 0) < act.units:
                continue  # nothing (left) to take there: the shopper moves on
            if act.kind == "return" and cart.get(act.product, 0) < act.units:
                continue
            ta = max(t + 0.5, act.not_before, arrived.get(key, 0.0) + 2.0)
            for lo, hi in busy.get(act.plate, []):  # wait for whoever holds the plate
                if ta < hi + 1.5 and ta + handle > lo - 1.5:
                    ta = hi + 1.5
            tb = ta + handle
            busy.setdefault(act.plate, []).append((ta, tb))
            tl.waypoints.append((ta - 0.5, *pos))
            point = layout.reach_point(act.plate, act.x)
            hand = int(rng.random() < 0.5)
            tl.reaches.append((ta - 0.5, ta, tb, point, hand))
            if act.kind == "rest":
                touches.append((act.plate, ta, tb, "rest", rng.uniform(*noise.rest_weight)))
            else:
                touches.append((act.plate, ta, tb, "press", 0.0))
                w = layout.unit_weight[act.product]
                units = w * (1 + noise.unit_spread * rng.standard_normal(act.units))
                sign = -1 if act.kind == "pick" else 1
                changes.append((act.plate, tb, sign * float(units.sum())))
                stock[key] = stock.get(key, 0) + sign * act.units
                if sign > 0:
                    arrived[key] = max(arrived.get(key, 0.0), tb)
                cart[act.product] = cart.get(act.product, 0) - sign * act.units
                events.append(
                    {
                        "kind": act.kind,
                        "t_start": ta,
                        "t_end": tb,
                        "plate": layout.plate_ids[act.plate],
                        "product": act.product,
                        "units": act.units,
                        "shopper": plan.shopper,
                        "session": session,
                    }
                )
            t = tb + 0.5 + rng.uniform(0.5, 2.5)
            tl.waypoints.append((t, *pos))
        for point in _route(layout, pos, GATE):
            dist = float(np.hypot(point[0] - pos[0], point[1] - pos[1]))
            t += dist / WALK
            tl.waypoints.append((t, *point))
            pos = point
        tl.exit_at = t + 0.5
        timelines[plan.shopper] = tl
        sessions[session] = plan if plan.group_with is None else sessions.get(session)
    truth_trips = []
    for plan in scene.shoppers:
        if plan.group_with is not None:
            continue
        members = [s.shopper for s in scene.shoppers if payer[s.shopper] == plan.shopper]
        cart = {p: q for p, q in carts.get(plan.shopper, {}).items() if q > 0}
        truth_trips.append(
            {
                "session": plan.shopper,
                "visit_id": plan.visit_id or plan.shopper,
                "members": members,
                "entry_method": plan.entry_method,
                "entry_token": plan.entry_token,
                "entered_at": plan.enter_at,
                "exited_at": max(timelines[m].exit_at for m in members),
                "never_exits": plan.never_exits,
                "cart": dict(sorted(cart.items())),
            }
        )
    return timelines, changes, touches, events, truth_trips


def _positions(tl: _Timeline, times: np.ndarray):
    wt = np.array([w[0] for w in tl.waypoints])
    wx = np.array([w[1] for w in tl.waypoints])
    wy = np.array([w[2] for w in tl.waypoints])
    order = np.argsort(wt, kind="stable")
    wt, wx, wy = np.maximum.accumulate(wt[order]), wx[order], wy[order]
    x, y = np.interp(times, wt, wx), np.interp(times, wt, wy)
    head = np.stack([x, y, np.full_like(x, 1.65)], axis=1)
    hands = np.stack(
        [
            np.stack([x - 0.2, y - 0.1, np.full_like(x, 1.0)], axis=1),
            np.stack([x + 0.2, y - 0.1, np.full_like(x, 1.0)], axis=1),
        ],
        axis=1,
    )
    for t0, ta, tb, point, hand in tl.reaches:
        rest = hands[:, hand, :].copy()
        for lo, hi, forward in ((t0, ta, True), (tb, tb + 0.5, False)):
            m = (times >= lo) & (times < hi)
            f = (times[m] - lo) / (hi - lo)
            f = f if forward else 1 - f
            hands[m, hand, :] = rest[m] * (1 - f[:, None]) + point * f[:, None]
        m = (times >= ta) & (times < tb)
        hands[m, hand, :] = point
    return head, hands


def render_scene(scene: Scene, noise: SensorNoise = SensorNoise()) -> Signals:
    """Play ``scene`` out into sensor signals and truth."""
    rng = np.random.default_rng([scene.seed, 5])
    layout = scene.layout
    timelines, changes, touches, events, trips = _plan_timelines(scene, rng, noise)
    start = scene.start
    end = max(tl.exit_at for tl in timelines.values()) + 5.0
    # plates
    n_ticks = int(np.ceil((end - start) / TICK))
    plate_t = start + np.arange(n_ticks) * TICK
    sample_t = start + np.arange(n_ticks * PER_MESSAGE) / HZ_PLATE
    P = layout.plates
    level = np.repeat(layout.initial_weight()[:, None], len(sample_t), axis=1).astype(np.float64)
    for plate, t, delta in changes:
        level[plate, np.searchsorted(sample_t, t) :] += delta
    drift = np.cumsum(rng.normal(0, noise.drift_step, (P, n_ticks)), axis=1) + rng.normal(0, 3, (P, 1))
    signal = level + np.repeat(drift, PER_MESSAGE, axis=1) + rng.normal(0, noise.plate_noise, level.shape)
    for plate, ta, tb, kind, extra in touches:
        lo, hi = np.searchsorted(sample_t, ta), np.searchsorted(sample_t, tb)
        if kind == "rest":
            ramp = np.minimum(1, np.minimum(np.arange(hi - lo), np.arange(hi - lo)[::-1]) / 10)
            signal[plate, lo:hi] += extra * ramp + rng.normal(0, noise.press_noise, hi - lo)
        else:
            signal[plate, lo:hi] += noise.press_mean + rng.normal(0, noise.press_noise, hi - lo)
    plate_samples = signal.reshape(P, n_ticks, PER_MESSAGE).astype(np.float32)
    # cameras
    times = start + np.arange(int((end - start) * HZ_CAMERA)) / HZ_CAMERA
    names = [s.shopper for s in scene.shoppers]
    plans = {s.shopper: s for s in scene.shoppers}
    dim = 16
    looks = rng.standard_normal((len(names), dim))
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    present = np.zeros((len(names), len(times)), bool)
    heads = np.zeros((len(names), len(times), 3))
    hands = np.zeros((len(names), len(times), 2, 3))
    for i, name in enumerate(names):
        tl = timelines[name]
        m = (times >= plans[name].enter_at) & (times < tl.exit_at)
        present[i] = m
        heads[i], hands[i] = _positions(tl, times)
    # track ids: one per person at entry, swapped when two people pass close
    label = np.zeros((len(names), len(times)), np.int64)
    label[:] = np.arange(len(names))[:, None]
    switches = []
    near_before = set()
    for k in range(len(times)):
        idx = np.nonzero(present[:, k])[0]
        if len(idx) > 1:
            d = np.linalg.norm(heads[idx, k, None, :2] - heads[None, idx, k, :2], axis=2)
            pairs = {(int(idx[a]), int(idx[b])) for a, b in zip(*np.nonzero(np.triu(d < noise.switch_distance, 1)))}
        else:
            pairs = set()
        for a, b in pairs - near_before:
            if min(heads[a, k, 0], heads[b, k, 0]) > -0.3 and rng.random() < noise.switch_chance:
                la, lb = label[a, k].copy(), label[b, k].copy()
                label[a, k:], label[b, k:] = lb, la
                switches.append({"t": float(times[k]), "shoppers": [names[a], names[b]]})
        near_before = pairs
    # what each camera observation reports, drawn per person for all frames at once
    visible = present.copy()
    for i in range(len(names)):
        idx = np.nonzero(present[i])[0]
        starts = idx[rng.random(len(idx)) < noise.occlusion_rate]
        for k in starts.tolist():
            visible[i, k : k + int(rng.uniform(0.3, 1.5) * HZ_CAMERA)] = False
        visible[i, idx[rng.random(len(idx)) < noise.dropout]] = False
    rows, first = [], []
    for i in range(len(names)):
        idx = np.nonzero(present[i])[0]
        k0, k1 = (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0)
        F = k1 - k0
        look = looks[i] + rng.normal(0, noise.appearance_noise, (F, dim))
        look /= np.linalg.norm(look, axis=1, keepdims=True)
        rows.append(
            (
                np.round(heads[i, k0:k1] + rng.normal(0, noise.position_noise, (F, 3)), 3).tolist(),
                np.round(hands[i, k0:k1] + rng.normal(0, noise.position_noise, (F, 2, 3)), 3).tolist(),
                np.round(look, 3).tolist(),
            )
        )
        first.append(k0)
    frames = []
    for k, t in enumerate(times.tolist()):
        tracks = [
            {
                "track_id": f"T{label[i, k] + 1}",
                "head": rows[i][0][k - first[i]],
                "hands": rows[i][1][k - first[i]],
                "appearance": rows[i][2][k - first[i]],
            }
            for i in np.nonzero(visible[:, k])[0].tolist()
        ]
        frames.append({"t": round(t, 4), "seq": k, "tracks": tracks})
    gate, gate_truth = [], []
    for i, name in enumerate(names):
        plan = plans[name]
        k_in = int(np.searchsorted(times, plan.enter_at))
        msg = {
            "kind": "gate",
            "gate_id": "gate-1",
            "event": "enter",
            "t": round(plan.enter_at, 3),
            "track_id": f"T{label[i, min(k_in, len(times) - 1)] + 1}",
        }
        if plan.group_with:
            payer = names.index(plan.group_with)
            msg.update(entry_method="group", group_with=f"T{label[payer, min(k_in, len(times) - 1)] + 1}")
        else:
            msg["entry_method"] = plan.entry_method
            if plan.entry_token:
                msg["entry_token"] = plan.entry_token
        if plan.visit_id:
            msg["visit_id"] = plan.visit_id
        gate.append(msg)
        gate_truth.append((msg, name))
        if not plan.never_exits:
            t_out = timelines[name].exit_at
            k_out = min(int(np.searchsorted(times, t_out)) - 1, len(times) - 1)
            gate.append(
                {
                    "kind": "gate",
                    "gate_id": "gate-1",
                    "event": "exit",
                    "t": round(t_out, 3),
                    "track_id": f"T{label[i, k_out] + 1}",
                }
            )
            gate_truth.append((gate[-1], name))
    gate.sort(key=lambda m: m["t"])
    truth_gate = [
        {"t": m["t"], "event": m["event"], "track_id": m["track_id"], "shopper": who}
        for m, who in sorted(gate_truth, key=lambda r: r[0]["t"])
    ]
    carriers: dict[str, list] = {}  # track id -> [(from time, shopper)], who the camera's id really followed
    for s_ in switches:
        for name in s_["shoppers"]:
            i = names.index(name)
            k = int(np.searchsorted(times, s_["t"]))
            carriers.setdefault(f"T{label[i, k] + 1}", []).append((s_["t"], name))
    for i, name in enumerate(names):
        carriers.setdefault(f"T{i + 1}", []).insert(0, (plans[name].enter_at, name))
    truth = {
        "trips": trips,
        "events": sorted(events, key=lambda e: e.get("t_start", e.get("t", 0))),
        "switches": switches,
        "gate": truth_gate,
        "tracks": {k: sorted(v) for k, v in sorted(carriers.items())},
    }
    return Signals(layout, start, end, plate_t, plate_samples, frames, gate, truth)


# ---------------------------------------------------------------- scenario families


def _catalogue(n: int, rng: np.random.Generator):
    ids = [f"K{i:04d}" for i in range(n)]
    weights = np.round(np.exp(rng.uniform(np.log(60), np.log(2500), n)))
    prices = np.round(rng.uniform(0.5, 12, n), 2)
    return ids, weights, prices


def scenario_layout(family: str, seed: int = 0, *, gondolas: int | None = None) -> Layout:
    rng = np.random.default_rng([seed, 3])
    ids, weights, prices = _catalogue(600, rng)
    g = gondolas or (20 if family == "crowded" else 6)
    layout, _ = generate_layout(
        "CF-LAB",
        ids,
        weights,
        prices,
        gondolas=g,
        shelves=6,
        plates_per_shelf=12,
        facings_per_plate=2,
        seed=seed,
        same_weight_share=1.0 if family == "same_weight" else 0.0,
    )
    return layout


def _facing(layout: Layout, rng: np.random.Generator, plates: np.ndarray | None = None):
    p = int(rng.choice(plates)) if plates is not None else int(rng.integers(layout.plates))
    f = layout.facings[p][int(rng.integers(len(layout.facings[p])))]
    return p, f


def scenario(
    family: str,
    trips: int = 50,
    seed: int = 0,
    *,
    gondolas: int | None = None,
    start: float = 1_790_000_000.0,
    spacing: float | None = None,
) -> Scene:
    """A scene of ``trips`` trips of one family. See the module docstring for the hard cases."""
    if family not in FAMILIES:
        raise ValueError(f"unknown scenario family {family!r}; one of {', '.join(FAMILIES)}")
    rng = np.random.default_rng([seed, 11, FAMILIES.index(family)])
    layout = scenario_layout(family, seed, gondolas=gondolas)
    shoppers: list[ShopperPlan] = []
    methods = ["app_code", "palm", "payment_card"]

    def plan(name, at, actions, **kw):
        method = methods[len(shoppers) % 3]
        shoppers.append(
            ShopperPlan(name, at, actions, entry_method=method, entry_token=f"tok-{name}", visit_id=f"v-{name}", **kw)
        )

    def basket(n_items, plates=None, allow_multi=True, returns=0.2):
        acts = []
        for _ in range(n_items):
            p, f = _facing(layout, rng, plates)
            units = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])) if allow_multi else 1
            acts.append(Action("pick", p, f.x, f.product_id, units))
            if rng.random() < returns:
                acts.append(Action("return", p, f.x, f.product_id, 1))
        return acts

    if family == "simple":
        t = start
        for i in range(trips):
            acts = basket(int(rng.integers(1, 7)))
            plan(f"s{i}", t, acts)
            t += 25 + 12 * len(acts) + 40  # one at a time: the previous shopper has left
    elif family == "crowded":
        hot = np.arange(0, min(layout.plates, 3 * layout.shelves * layout.plates_per_shelf))
        for i in range(trips):
            at = start + i * (6.0 if spacing is None else spacing)
            acts = basket(int(rng.integers(2, 8)), plates=hot if rng.random() < 0.5 else None)
            if rng.random() < 0.2:
                p, _ = _facing(layout, rng, hot)
                acts.insert(int(rng.integers(len(acts) + 1)), Action("rest", p, layout.reach_point(p)[0]))
            plan(f"c{i}", at, acts)
        # pairs at one shelf at the same moment, hands crossing
        for i in range(0, trips // 5):
            s = int(rng.integers(layout.shelves))
            row = (int(rng.integers(min(layout.gondolas, 3))) * layout.shelves + s) * layout.plates_per_shelf
            j = int(rng.integers(layout.plates_per_shelf - 1))
            pa, pb = row + j, row + j + 1
            fa, fb = layout.facings[pa][-1], layout.facings[pb][0]
            at = start + 3 + i * 30.0
            cross = rng.random() < 0.5
            plan(f"x{i}a", at, [Action("pick", pa, fa.x, fa.product_id, 1, stand_x=fb.x if cross else None)])
            plan(f"x{i}b", at + 0.3, [Action("pick", pb, fb.x, fb.product_id, 1, stand_x=fa.x if cross else None)])
    elif family == "misplaced":
        for i in range(trips):
            at = start + i * 20.0
            p, f = _facing(layout, rng)
            q, g = _facing(layout, rng)
            while q == p:
                q, g = _facing(layout, rng)
            acts = basket(int(rng.integers(0, 3)))
            acts += [Action("pick", p, f.x, f.product_id, 1), Action("return", q, g.x + 0.05, f.product_id, 1)]
            plan(f"m{i}a", at, acts)
            later = [Action("pick", q, g.x + 0.05, f.product_id, 1, wait=8.0)] + basket(int(rng.integers(0, 3)))
            if rng.random() < 0.5:
                later.insert(1, Action("pick", q, g.x, g.product_id, 1))
            plan(f"m{i}b", at + 45, later)
    elif family == "same_weight":
        t = start
        for i in range(trips):
            acts = basket(int(rng.integers(2, 7)), returns=0.1)
            plan(f"w{i}", t, acts)
            t += 10
    elif family == "handoff":
        for i in range(trips):
            at = start + i * 15.0
            payer_acts = basket(int(rng.integers(1, 4)))
            plan(f"h{i}", at, payer_acts)
            companion = basket(int(rng.integers(1, 4)), returns=0.3)
            companion.append(Action("handoff", product=None, to=f"h{i}"))
            plan(f"h{i}c", at + 1.0, companion, group_with=f"h{i}")
    return Scene(layout, shoppers, start, seed)
