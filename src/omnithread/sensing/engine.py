"""The sensing engine: from gate, camera and shelf-weight messages to carts, receipts and interest events.

It is streaming. Messages may arrive late and out of order by up to ``lateness`` seconds; they wait
in a reorder buffer and the engine works through the store's time in chunks once the watermark (the
newest time seen minus ``lateness``) has passed them. Every message carries a key (plate and
sequence number, camera frame number, gate event), so a replayed message is recognised and changes
nothing. A message that cannot be used (unknown plate, impossible weights, too late, malformed) is
kept with its reason in :attr:`SensingEngine.problems`; the store keeps running for everyone else.

Per chunk:

1. **Gate.** An entry binds the track id the gate camera saw to an identity (app code, palm token,
   payment card; or a group entering on another shopper's identity, who then shares their cart).
2. **Cameras.** Each observation (head, two hands, appearance vector) is given to a shopper by
   appearance: the mean of the track's last few appearance vectors against each shopper's reference
   vector taken at the gate. Track ids that the camera swaps when people pass close are thus put
   right after a few frames. Head positions add up to dwell per aisle.
3. **Plates.** A plate's level is only trusted while it is steady: a block of 12 samples whose spread
   is small and whose mean is near the level. Steady blocks follow the level (absorbing drift). A
   block that is not steady opens an event; once two steady blocks in a row agree on a new level,
   the event closes with the change in weight. Net changes below ``min_change`` (a hand resting on
   the plate, noise) are dropped.
4. **Who and what.** The shopper is the one whose hand came nearest the plate during the event;
   the product and the number of units come from the weight change against every product that is
   on that plate (its planogram and anything known to have been put back there), weighed with where
   the hand was along the plate. A put-back is matched against what the shopper is carrying.
   Each line's confidence is the product of the two posteriors; below ``review_below`` the trip is
   sent to review instead of trusting the guess.
5. **Receipts.** When every member of a trip has left, the cart is closed ``exit_grace`` seconds
   later into events: ``Store Entered``, ``Product Picked`` and ``Product Returned To Shelf`` per
   event, ``Store Exited`` with dwell per aisle, and ``Order Completed`` (channel ``store``) with
   confidences and the trip's gate identity, ready for the event log and identity resolution.
"""

from __future__ import annotations

import math
import time
from bisect import insort
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from omnithread.errors import Problem
from omnithread.sensing.layout import AISLE, PLATE_WIDTH, Layout

__all__ = ["SensingConfig", "SensingEngine", "Receipt", "SensorProblem", "WeightEvent"]

TICK, PER_MESSAGE = 0.2, 12  # seconds a plate message covers, samples in it (60 Hz)
APPEARANCE = 16  # length of the appearance vector a camera track carries
ENTRY_METHODS = ("app_code", "palm", "payment_card", "none", "group")


@dataclass(frozen=True)
class SensingConfig:
    lateness: float = 2.0  # seconds a message may trail newer ones and still be used
    chunk: float = 1.0  # seconds of store time processed at once
    steady_spread: float = 4.0  # grams: a block with a larger standard deviation is not steady
    level_tolerance: float = 4.0  # grams a steady block may differ from the level
    settle_blocks: int = 2
    min_change: float = 12.0  # grams; smaller net changes are noise or a resting hand
    drift_follow: float = 0.1
    weight_sigma: float = 2.0  # grams of measurement error on a level difference
    unit_spread: float = 0.012  # share a unit's weight varies around its product's
    position_sigma: float = 0.07  # metres: how far the hand may be from a facing's centre
    hand_sigma: float = 0.05  # metres: how far from the plate edge a touching hand is seen
    reach: float = 0.35  # metres: a hand farther than this did not touch the plate
    body_penalty: float = 0.3  # metres added when only the body, not a hand, was seen at the plate
    review_below: float = 0.8
    exit_grace: float = 3.0
    lost_after: float = 600.0
    max_units: int = 12
    max_weight: float = 100_000.0
    min_weight: float = -200.0
    clock_tolerance: float = 1.0
    max_ahead: float = 5.0  # seconds one sensor may move the store's time ahead on its own
    quorum: int = 3  # sensors that must agree before the store's time leaps further
    max_gap: float = 10.0  # seconds: how far back a change after a gap in a plate's messages may have begun
    appearance_window: int = 6
    gate_seconds: float = 1.0  # a shopper's reference appearance is taken in the gate lane, this long
    # (up to three times as long when the camera lost them there)
    extra_unit_odds: float = 0.3  # prior odds of each unit beyond the first in one grab
    currency: str = "GBP"


@dataclass
class SensorProblem:
    """A message the engine could not use, with why; the message itself is kept."""

    problem: Problem
    message: dict | None

    def as_dict(self) -> dict:
        return {**self.problem.as_dict(), "message": self.message}


@dataclass
class WeightEvent:
    plate: int
    t_start: float
    t_end: float
    delta: float
    kind: str = ""
    product: str | None = None
    units: int = 0
    shopper: int = -1
    session: str | None = None
    confidence: float = 0.0
    shopper_confidence: float = 0.0
    product_confidence: float = 0.0
    hand_x: tuple | None = None  # where along the plate, how sure (metres), and where the body stood
    misplaced: bool = False
    note: str = ""


@dataclass
class _Shopper:
    label: str
    session: str
    entered: float
    ref: np.ndarray | None = None
    ref_sum: np.ndarray | None = None
    ref_n: int = 0
    exited: float | None = None
    last_seen: float = 0.0
    dwell: dict[int, float] = field(default_factory=dict)


@dataclass
class _Session:
    visit_id: str
    entered: float
    entry_method: str
    entry_token: str | None
    gate_id: str | None
    members: list[int] = field(default_factory=list)
    events: list[WeightEvent] = field(default_factory=list)
    cart: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # product -> [(units, confidence)]
    close_at: float | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass
class Receipt:
    """A closed trip: lines with confidences, whether it needs review, and the events it became."""

    visit_id: str
    lines: dict[str, tuple[int, float]]
    review: bool
    reasons: list[str]
    entered: float
    exited: float
    closed_store_time: float
    closed_wall: float
    events: list[dict]
    dwell: dict[str, float]

    @property
    def basket(self) -> dict[str, int]:
        return {p: q for p, (q, _) in self.lines.items() if q > 0}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class SensingEngine:
    """Feed messages with :meth:`feed`, collect receipts with :meth:`poll`, end with :meth:`close`."""

    def __init__(self, layout: Layout, config: SensingConfig = SensingConfig()):
        self.layout, self.config = layout, config
        P = layout.plates
        self.level = np.full(P, np.nan)
        self.unsteady = np.zeros(P, bool)
        self._start = np.zeros(P)
        self._last = np.zeros(P)
        self._steady_n = np.zeros(P, np.int64)
        self._steady_sum = np.zeros(P)
        self._seen = np.full(P, -np.inf)  # time of each plate's last message
        self.stock: list[dict[str, int]] = [{f.product_id: f.stock for f in fs} for fs in layout.facings]
        self.facing_x: list[dict[str, float]] = [{f.product_id: f.x for f in fs} for fs in layout.facings]
        self.home_plates = {p: {plate for plate, _ in v} for p, v in layout.home.items()}
        self.problems: list[SensorProblem] = []
        self.duplicates = 0
        self.messages = 0
        self._plate_origin: dict[int, float] = {}
        self._seen_plate: set[tuple[int, int]] = set()
        self._seen_frame: set = set()
        self._seen_gate: set = set()
        self._epoch: float | None = None
        self._ticks: dict[int, np.ndarray] = {}
        self._frames: list[tuple[float, int, dict]] = []
        self._gate: list[tuple[float, int, dict]] = []
        self._n = 0
        self.processed_until: float | None = None
        self.newest = -math.inf
        self._ahead: dict[str, float] = {}
        self.shoppers: list[_Shopper] = []
        self.sessions: dict[str, _Session] = {}
        self.label_shopper: dict[str, int] = {}
        self._label_looks: dict[str, list[np.ndarray]] = {}
        self._hist_t = np.zeros(0)
        self._hist_s = np.zeros(0, np.int64)
        self._hist_hands = np.zeros((0, 2, 3))
        self._hist_head = np.zeros((0, 3))
        self._hist_label = np.zeros(0, np.int64)
        self._hist_look = np.zeros((0, APPEARANCE))
        self._label_ids: dict[str, int] = {}
        self.receipts: list[Receipt] = []
        self._out: list[Receipt] = []
        self.weight_events: list[WeightEvent] = []
        self.foreign_x: dict[tuple[int, str], float] = {}
        self._body_sq, self._body_n = 0.0, 0  # where a product put back on another plate lies

    # ------------------------------------------------------------ input

    def _reject(self, code: str, field_: str, value, message: str, msg) -> None:
        self.problems.append(
            SensorProblem(
                Problem(code, field_, str(value)[:80], message),
                msg if isinstance(msg, dict) else {"raw": repr(msg)[:500]},
            )
        )

    def feed(self, msg: dict) -> None:
        """Take one message; it is used once the watermark passes its time."""
        self.messages += 1
        if not isinstance(msg, dict):
            return self._reject("not_an_object", "", type(msg).__name__, "a sensor message must be an object", msg)
        kind = msg.get("kind")
        t = msg.get("t")
        if not _finite(t):
            return self._reject("invalid_time", "t", t, f"t must be a number of seconds, got {t!r}", msg)
        if self._epoch is None:
            self._epoch = float(t) - (float(t) % TICK)
        if kind == "plate":
            accepted = self._feed_plate(msg, float(t))
        elif kind == "frame":
            accepted = self._feed_frame(msg, float(t))
        elif kind == "gate":
            accepted = self._feed_gate(msg, float(t))
        else:
            return self._reject("unknown_kind", "kind", kind, f"kind must be plate, frame or gate, got {kind!r}", msg)
        if accepted:
            self._move_time(float(t), f"{kind}:{msg.get('plate_id') or msg.get('camera') or msg.get('gate_id')}")

    def _move_time(self, t: float, source: str) -> None:
        """Move the store's time (and so the watermark) to ``t``.

        One sensor whose clock leapt ahead must not turn everyone else's messages late: a message more
        than ``max_ahead`` seconds ahead of the store's time is kept but moves the time only once
        ``quorum`` different sensors report times that far ahead (the store really was silent, and
        came back)."""
        cfg = self.config
        if self.newest == -math.inf or t <= self.newest + cfg.max_ahead:
            if t > self.newest:
                self.newest = t
                self._advance(t - cfg.lateness)
            return
        self._ahead[source] = max(self._ahead.get(source, t), t)
        if len(self._ahead) >= cfg.quorum:
            self.newest = sorted(self._ahead.values())[-cfg.quorum]
            self._ahead = {s: v for s, v in self._ahead.items() if v > self.newest + cfg.max_ahead}
            self._advance(self.newest - cfg.lateness)

    def feed_many(self, messages) -> None:
        for m in messages:
            self.feed(m)

    def _too_late(self, t: float, msg: dict) -> bool:
        if self.processed_until is not None and t < self.processed_until:
            self._reject(
                "too_late",
                "t",
                round(t, 3),
                f"message at t={t:.3f} arrived after the store was processed up to "
                f"{self.processed_until:.3f} (more than {self.config.lateness} s late)",
                msg,
            )
            return True
        return False

    def _feed_plate(self, msg: dict, t: float) -> bool | None:
        plate = self.layout.index.get(msg.get("plate_id"))
        if plate is None:
            return self._reject(
                "unknown_plate",
                "plate_id",
                msg.get("plate_id"),
                f"plate_id {msg.get('plate_id')!r} is not in the layout of store {self.layout.store_id}",
                msg,
            )
        seq = msg.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            return self._reject("invalid_seq", "seq", seq, f"seq must be a non-negative integer, got {seq!r}", msg)
        key = (plate, seq)
        if key in self._seen_plate:
            self.duplicates += 1
            return
        samples = msg.get("samples")
        if not isinstance(samples, list) or len(samples) != PER_MESSAGE:
            return self._reject(
                "invalid_samples",
                "samples",
                type(samples).__name__ if not isinstance(samples, list) else f"{len(samples)} samples",
                f"samples must be a list of {PER_MESSAGE} weights",
                msg,
            )
        try:
            arr = np.asarray(samples, dtype=np.float64)
        except (TypeError, ValueError):
            return self._reject("invalid_samples", "samples", str(samples)[:60], "samples must all be numbers", msg)
        if not np.isfinite(arr).all():
            return self._reject("invalid_samples", "samples", "non-finite", "samples must be finite numbers", msg)
        lo, hi = arr.min(), arr.max()
        if lo < self.config.min_weight or hi > self.config.max_weight:
            bad = lo if lo < self.config.min_weight else hi
            return self._reject(
                "absurd_weight",
                "samples",
                round(float(bad), 1),
                f"plate {msg['plate_id']} reported {bad:.1f} g, outside "
                f"[{self.config.min_weight:g}, {self.config.max_weight:g}] g",
                msg,
            )
        origin = self._plate_origin.setdefault(plate, t - seq * TICK)
        expected = origin + seq * TICK
        if abs(t - expected) > self.config.clock_tolerance:
            self._reject(
                "clock_jump",
                "t",
                round(t, 3),
                f"plate {msg['plate_id']} clock jumped by {t - expected:+.2f} s at seq {seq}; "
                "used the time its sequence number gives",
                msg,
            )  # kept as a note; the samples are used
            t = expected
        if self._too_late(t, msg):
            return
        self._seen_plate.add(key)
        tick = int(round((t - self._epoch) / TICK))
        block = self._ticks.get(tick)
        if block is None:
            block = self._ticks[tick] = np.full((self.layout.plates, PER_MESSAGE), np.nan)
        block[plate] = arr
        return True

    def feed_block(self, t: float, samples: np.ndarray) -> None:
        """Take one message from every plate at once (a shelf gateway's batch), ``samples`` (plates, 12)."""
        if self._epoch is None:
            self._epoch = t - (t % TICK)
        tick = int(round((t - self._epoch) / TICK))
        self._ticks[tick] = np.asarray(samples, dtype=np.float64)
        self.messages += self.layout.plates
        self.newest = max(self.newest, t)
        self._advance(self.newest - self.config.lateness)

    def _feed_frame(self, msg: dict, t: float) -> bool | None:
        key = (msg.get("camera"), msg.get("seq"), round(t, 3))
        if key in self._seen_frame:
            self.duplicates += 1
            return
        tracks = msg.get("tracks")
        if not isinstance(tracks, list):
            return self._reject("invalid_tracks", "tracks", type(tracks).__name__, "tracks must be a list", msg)
        if self._too_late(t, msg):
            return
        try:  # the common case, all at once
            labels = [str(tr["track_id"]) for tr in tracks]
            heads = np.array([tr["head"] for tr in tracks], float).reshape(len(tracks), 3)
            hands = np.array([tr["hands"] for tr in tracks], float).reshape(len(tracks), 2, 3)
            looks = np.array([tr.get("appearance") or [0.0] * APPEARANCE for tr in tracks], float).reshape(
                len(tracks), APPEARANCE
            )
            if not (np.isfinite(heads).all() and np.isfinite(hands).all() and np.isfinite(looks).all()):
                raise ValueError("not finite")
            if not all(labels):
                raise ValueError("empty track_id")
        except (KeyError, TypeError, ValueError, AttributeError):
            labels, heads, hands, looks = self._frame_one_by_one(msg, tracks)
        self._seen_frame.add(key)
        self._n += 1
        insort(self._frames, (t, self._n, (labels, heads, hands, looks)), key=lambda r: (r[0], r[1]))
        return True

    def _frame_one_by_one(self, msg: dict, tracks: list):
        good = []
        for i, tr in enumerate(tracks):
            try:
                head = np.asarray(tr["head"], float)
                hands = np.asarray(tr["hands"], float)
                look = np.asarray(tr.get("appearance") or [0.0] * APPEARANCE, float)
                if head.shape != (3,) or hands.shape != (2, 3) or look.shape != (APPEARANCE,):
                    raise ValueError("wrong shape")
                if not str(tr["track_id"]):
                    raise ValueError("empty track_id")
                if not (np.isfinite(head).all() and np.isfinite(hands).all() and np.isfinite(look).all()):
                    raise ValueError("not finite")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self._reject(
                    "invalid_track",
                    f"tracks[{i}]",
                    str(tr)[:60],
                    f"track {i} of frame {msg.get('seq')} is unusable ({exc}): it needs track_id, "
                    f"head [x,y,z], hands [[x,y,z],[x,y,z]] and, if any, {APPEARANCE} appearance values",
                    msg,
                )
                continue
            good.append((str(tr["track_id"]), head, hands, look))
        return (
            [g[0] for g in good],
            np.array([g[1] for g in good]).reshape(-1, 3),
            np.array([g[2] for g in good]).reshape(-1, 2, 3),
            np.array([g[3] for g in good]).reshape(-1, APPEARANCE),
        )

    def _feed_gate(self, msg: dict, t: float) -> bool | None:
        event, track = msg.get("event"), msg.get("track_id")
        if event not in ("enter", "exit"):
            return self._reject(
                "invalid_gate_event", "event", event, f"gate event must be enter or exit, got {event!r}", msg
            )
        if not isinstance(track, str) or not track:
            return self._reject("invalid_track", "track_id", track, "a gate message needs the track_id it saw", msg)
        if event == "enter":
            method = msg.get("entry_method", "none")
            if method not in ENTRY_METHODS:
                return self._reject(
                    "invalid_entry_method",
                    "entry_method",
                    method,
                    f"entry_method must be one of {', '.join(ENTRY_METHODS)}, got {method!r}",
                    msg,
                )
            if method == "group" and not msg.get("group_with"):
                return self._reject(
                    "missing_group",
                    "group_with",
                    None,
                    "a group entry must name the track it entered with in group_with",
                    msg,
                )
        key = (event, track, round(t, 3))
        if key in self._seen_gate:
            self.duplicates += 1
            return
        if self._too_late(t, msg):
            return
        self._seen_gate.add(key)
        self._n += 1
        insort(self._gate, (t, self._n, msg), key=lambda r: (r[0], r[1]))
        return True

    # ------------------------------------------------------------ time

    def _advance(self, watermark: float) -> None:
        if self._epoch is None:
            return
        if self.processed_until is None:
            self.processed_until = self._epoch
        while self.processed_until + self.config.chunk <= watermark:
            self._chunk(self.processed_until, self.processed_until + self.config.chunk)
            self.processed_until += self.config.chunk

    def _chunk(self, c0: float, c1: float) -> None:
        gate = []
        while self._gate and self._gate[0][0] < c1:
            gate.append(self._gate.pop(0)[2])
        for msg in gate:
            if msg["event"] == "enter":
                self._enter(msg)
        frames = []
        while self._frames and self._frames[0][0] < c1:
            t, _, tracks = self._frames.pop(0)
            frames.append((t, tracks))
        if frames:
            self._observe(frames)
        t0 = int(round((c0 - self._epoch) / TICK))
        t1 = int(round((c1 - self._epoch) / TICK))
        blocks = [self._ticks.pop(k, None) for k in range(t0, t1)]
        self._plates(t0, blocks)
        for msg in gate:
            if msg["event"] == "exit":
                self._exit(msg)
        self._close_due(c1)

    # ------------------------------------------------------------ gate and cameras

    def _enter(self, msg: dict) -> None:
        t, label, method = float(msg["t"]), msg["track_id"], msg.get("entry_method", "none")
        if method == "group":
            leader = self._identify_label(msg["group_with"], t)
            if leader is None:
                self._reject(
                    "unknown_group",
                    "group_with",
                    msg["group_with"],
                    f"group entry names track {msg['group_with']!r}, which did not enter; "
                    "the shopper gets a trip of their own, sent to review",
                    msg,
                )
                session = self._new_session(msg, t, "none")
                self.sessions[session].reasons.append("group leader unknown")
            else:
                session = self.shoppers[leader].session
        else:
            session = self._new_session(msg, t, method)
        self.shoppers.append(_Shopper(label, session, t, last_seen=t))
        sid = len(self.shoppers) - 1
        self.sessions[session].members.append(sid)
        self.label_shopper[label] = sid
        self._label_looks[label] = []

    def _new_session(self, msg: dict, t: float, method: str) -> str:
        visit = str(msg.get("visit_id") or f"{self.layout.store_id}-{int(t * 1000)}-{msg['track_id']}")
        while visit in self.sessions:
            visit += "+"
        token = msg.get("entry_token") if method in ("app_code", "palm", "payment_card") else None
        self.sessions[visit] = _Session(visit, t, method, token, msg.get("gate_id"))
        return visit

    def _observe(self, frames: list) -> None:
        cfg = self.config
        ts, ss, ls, hs, hd, lk = [], [], [], [], [], []
        touched = set()
        for t, (labels, heads, hands, looks) in frames:
            for k, label in enumerate(labels):
                sid = self.label_shopper.get(label)
                if sid is None or self.shoppers[sid].exited is not None:
                    continue  # not (or no longer) a shopper the gate knows: staff, or a track past the exit
                me = self.shoppers[sid]
                look = looks[k]
                seen = self._label_looks[label]
                seen.append(look)
                if len(seen) > cfg.appearance_window:
                    del seen[0]
                touched.add(label)
                if me.ref is None:
                    lane = t - me.entered < cfg.gate_seconds or (me.ref_n < 6 and t - me.entered < 3 * cfg.gate_seconds)
                    if me.label == label and lane and look.any():
                        me.ref_sum = look.copy() if me.ref_sum is None else me.ref_sum + look
                        me.ref_n += 1
                    if me.ref_n and (me.ref_n >= 12 or not lane):
                        me.ref = me.ref_sum / np.linalg.norm(me.ref_sum)
                dt = min(t - me.last_seen, 0.5)
                me.last_seen = t
                y, x = heads[k, 1], heads[k, 0]
                aisle = int(y // AISLE)
                if dt > 0 and 0 <= aisle < self.layout.gondolas and -0.3 < x < self.layout.length + 0.3:
                    me.dwell[aisle] = me.dwell.get(aisle, 0.0) + dt
                ts.append(t)
                ss.append(sid)
                ls.append(self._label_ids.setdefault(label, len(self._label_ids)))
                hs.append(hands[k])
                hd.append(heads[k])
                lk.append(look)
        self._follow_swaps(touched)
        if ts:
            keep = self._hist_t >= ts[-1] - 30.0
            self._hist_t = np.concatenate([self._hist_t[keep], ts])
            self._hist_s = np.concatenate([self._hist_s[keep], np.array(ss, np.int64)])
            self._hist_label = np.concatenate([self._hist_label[keep], np.array(ls, np.int64)])
            self._hist_hands = np.concatenate([self._hist_hands[keep], np.stack(hs)])
            self._hist_head = np.concatenate([self._hist_head[keep], np.stack(hd)])
            self._hist_look = np.concatenate([self._hist_look[keep], np.stack(lk)])

    def _in_store(self) -> list[int]:
        """Shoppers of trips not yet closed."""
        return [m for session in self.sessions.values() for m in session.members]

    def _follow_swaps(self, labels) -> None:
        """After each chunk, give a track id to whoever its recent appearance matches clearly better."""
        present = [i for i in self._in_store() if self.shoppers[i].exited is None and self.shoppers[i].ref is not None]
        if len(present) < 2:
            return
        mat = np.stack([self.shoppers[i].ref for i in present])
        for label in labels:
            seen = self._label_looks[label]
            sid = self.label_shopper.get(label)
            if sid not in present or len(seen) < 3:
                continue
            sims = mat @ np.sum(seen, axis=0) / len(seen)
            best = int(np.argmax(sims))
            if present[best] != sid and sims[best] > sims[present.index(sid)] + 0.15:
                self.label_shopper[label] = present[best]

    def _identify_label(self, label: str, t: float) -> int | None:
        """Who carries track ``label`` at ``t``, by the appearance of its last few observations."""
        lid = self._label_ids.get(label)
        present = [i for i in self._in_store() if self.shoppers[i].exited is None and self.shoppers[i].ref is not None]
        mapped = self.label_shopper.get(label)
        if mapped is not None and self.shoppers[mapped].ref is None:
            return mapped  # just through the gate: the camera has not seen enough of them to judge
        if lid is not None and len(present) > 1:
            m = (self._hist_label == lid) & (self._hist_t >= t - 3.0) & (self._hist_t <= t + 0.5)
            look = self._hist_look[m][-self.config.appearance_window * 2 :].sum(axis=0)
            if m.sum() >= 3 and np.abs(look).sum():
                refs = np.stack([self.shoppers[i].ref for i in present])
                return present[int(np.argmax(refs @ look))]
        return self.label_shopper.get(label)

    def _exit(self, msg: dict) -> None:
        sid = self._identify_label(msg["track_id"], float(msg["t"]))
        if sid is None or self.shoppers[sid].exited is not None:
            cands = [i for i, s in enumerate(self.shoppers) if s.exited is None and s.label == msg["track_id"]]
            if not cands:
                return self._reject(
                    "exit_without_entry",
                    "track_id",
                    msg["track_id"],
                    f"track {msg['track_id']!r} left through the gate but never entered",
                    msg,
                )
            sid = cands[0]
        me = self.shoppers[sid]
        me.exited = float(msg["t"])
        session = self.sessions[me.session]
        if all(self.shoppers[m].exited is not None for m in session.members):
            session.close_at = me.exited + self.config.exit_grace
        for label, s in list(self.label_shopper.items()):
            if s == sid:
                del self.label_shopper[label]

    # ------------------------------------------------------------ plates

    def _plates(self, tick0: int, blocks: list) -> None:
        cfg = self.config
        K = len(blocks)
        P = self.layout.plates
        data = np.full((P, K, PER_MESSAGE), np.nan)
        for k, b in enumerate(blocks):
            if b is not None:
                data[:, k, :] = b
        have = ~np.isnan(data[:, :, 0])
        with np.errstate(invalid="ignore"):
            mean = np.where(have, np.nanmean(np.where(have[..., None], data, 0.0), axis=2), np.nan)
            spread = np.where(have, data.std(axis=2), np.inf)
        new = np.isnan(self.level) & have.any(axis=1)
        if new.any():  # first sight of a plate: its first block sets the level
            first = np.argmax(have, axis=1)
            self.level[new] = mean[new, first[new]]
        with np.errstate(invalid="ignore"):
            steady = (spread < cfg.steady_spread) & (np.abs(mean - self.level[:, None]) < cfg.level_tolerance)
        calm = (steady | ~have).all(axis=1) & ~self.unsteady
        idx = np.nonzero(calm & have.any(axis=1))[0]
        if len(idx):
            m = np.nanmean(mean[idx], axis=1)
            self.level[idx] += cfg.drift_follow * (m - self.level[idx])
        last_have = K - 1 - np.argmax(have[:, ::-1], axis=1)
        for p in np.nonzero(~calm)[0].tolist():
            for k in range(K):
                if not have[p, k]:
                    continue
                t = self._epoch + (tick0 + k) * TICK
                m, s = mean[p, k], spread[p, k]
                seen_before = self._seen[p]
                self._seen[p] = t
                if not self.unsteady[p]:
                    if s < cfg.steady_spread and abs(m - self.level[p]) < cfg.level_tolerance:
                        self.level[p] += cfg.drift_follow * (m - self.level[p])
                        continue
                    self.unsteady[p] = True
                    # after a gap in the plate's messages the change may have begun right after the last one seen
                    self._start[p] = max(min(t, seen_before + TICK), t - cfg.max_gap)
                    self._steady_n[p] = 1 if s < cfg.steady_spread else 0
                    self._steady_sum[p] = m if s < cfg.steady_spread else 0.0
                    self._last[p] = m
                    continue
                if s < cfg.steady_spread and (self._steady_n[p] == 0 or abs(m - self._last[p]) < cfg.level_tolerance):
                    self._steady_n[p] += 1
                    self._steady_sum[p] += m
                else:
                    self._steady_n[p] = 1 if s < cfg.steady_spread else 0
                    self._steady_sum[p] = m if s < cfg.steady_spread else 0.0
                self._last[p] = m
                if self._steady_n[p] >= cfg.settle_blocks:
                    settled = self._steady_sum[p] / self._steady_n[p]
                    delta = settled - self.level[p]
                    t_end = t - (cfg.settle_blocks - 1) * TICK
                    self.level[p] = settled
                    self.unsteady[p] = False
                    if abs(delta) >= cfg.min_change:
                        self._resolve(WeightEvent(p, float(self._start[p]), t_end, float(delta)))
        seen = have.any(axis=1) & calm
        self._seen[seen] = self._epoch + (tick0 + last_have[seen]) * TICK

    # ------------------------------------------------------------ who and what

    def _evidence(self, plate: int, t0: float, t1: float):
        """Per shopper: how much evidence the camera holds that they touched ``plate`` between ``t0``
        and ``t1``, how near they came, and where along the plate.

        Each observation of a hand at the plate's front edge counts, softly by its distance
        (``hand_sigma``), so a hand that stayed at the plate through the grab outweighs a neighbour's
        passing close once, and a few observations given to the wrong person next to a camera id
        swap outweigh nothing. When the camera lost the hands (occlusion), standing right in front of
        the plate counts for half a touch. Where along the plate is the touching hand's ``x``, else the
        body's, as precise as this store's shoppers have been seen to stand in front of what they take
        (``x``, its sigma, and the body's ``x`` when the hand was seen).
        """
        cfg = self.config
        m = (self._hist_t >= t0) & (self._hist_t <= t1)
        if not m.any():
            return {}, {}, {}
        hands = self._hist_hands[m]  # (n, 2, 3)
        heads = self._hist_head[m]
        x0 = self.layout.plate_x0[plate]
        px = np.clip(hands[..., 0], x0, x0 + PLATE_WIDTH)
        d = np.sqrt(
            (hands[..., 0] - px) ** 2
            + (hands[..., 1] - self.layout.plate_y[plate]) ** 2
            + (hands[..., 2] - self.layout.plate_z[plate] - 0.05) ** 2
        )
        near = d.min(axis=1)
        which = d.argmin(axis=1)
        bx = np.clip(heads[:, 0], x0, x0 + PLATE_WIDTH)
        body = np.hypot(heads[:, 0] - bx, heads[:, 1] - self.layout.plate_y[plate] - 0.7)
        sids = self._reidentify(self._hist_s[m], self._hist_label[m], self._hist_look[m])
        touch = np.exp(-0.5 * (near / cfg.hand_sigma) ** 2)
        stand = 0.5 * np.exp(-0.5 * (body / (2 * cfg.hand_sigma)) ** 2)
        evidence, nearest, xs = {}, {}, {}
        for sid in np.unique(sids).tolist():
            sel = sids == sid
            dm = near[sel]
            evidence[sid] = float(touch[sel].sum() + stand[sel].max())
            nearest[sid] = float(min(dm.min(), body[sel].min() + cfg.body_penalty))
            close = dm < dm.min() + 0.05
            at_plate = body[sel] + cfg.body_penalty < cfg.reach
            body_x = float(np.median(heads[sel][at_plate, 0])) if at_plate.any() else None
            if dm.min() < 0.15:
                hx = hands[sel][np.arange(sel.sum()), which[sel], 0]
                xs[sid] = (float(np.median(hx[close])), cfg.position_sigma, body_x)
            elif body_x is not None:
                xs[sid] = (body_x, self._body_sigma(), None)
        return evidence, nearest, xs

    def _body_sigma(self) -> float:
        """How far from the touched spot shoppers stand, learnt from grabs where the hand was seen."""
        if self._body_n < 20:
            return 2 * self.config.position_sigma
        return math.sqrt(self._body_sq / self._body_n + self.config.position_sigma**2)

    def _reidentify(self, sids: np.ndarray, labels: np.ndarray, looks: np.ndarray) -> np.ndarray:
        """Who each observation in a short window was, from the appearance around it on its track.

        A camera may swap two track ids as people pass; one frame's appearance is too noisy to tell,
        so each observation is judged by the mean of the few observations before it, or after it, on
        the same track id, whichever agrees better with someone: next to a swap, one side mixes two
        people and the other does not."""
        refs = [(i, self.shoppers[i].ref) for i in self._in_store() if self.shoppers[i].ref is not None]
        if len(refs) < 2:
            return sids
        ids = np.array([i for i, _ in refs])
        mat = np.stack([r for _, r in refs])
        out = sids.copy()
        half = self.config.appearance_window // 2
        for label in np.unique(labels).tolist():
            idx = np.nonzero(labels == label)[0]
            seq = looks[idx]
            if len(idx) < 3 or not np.abs(seq).sum():
                continue
            csum = np.vstack([np.zeros((1, seq.shape[1])), np.cumsum(seq, axis=0)])
            k = np.arange(len(idx))
            w = 2 * half + 1
            before = csum[k + 1] - csum[np.maximum(k + 1 - w, 0)]
            after = csum[np.minimum(k + w, len(idx))] - csum[k]
            sims = []
            for side in (before, after):
                side = side / np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-9)
                sims.append(side @ mat.T)
            # next to a swap one side mixes two people; the other is pure and agrees better with someone
            use = np.where((sims[0].max(axis=1) >= sims[1].max(axis=1))[:, None], sims[0], sims[1])
            judged = np.isin(sids[idx], ids)  # someone without a reference yet keeps their track id
            out[idx[judged]] = ids[np.argmax(use[judged], axis=1)]
        return out

    def _who(self, ev: WeightEvent) -> tuple[dict[int, float], dict[int, tuple[float, float]]]:
        """Posterior over shoppers present, and where each one's hand was along the plate.

        The posterior is proportional to the square of each shopper's touch evidence; when nobody's
        hand came within ``reach`` of the plate it is halved, so the line goes to review."""
        for before, after in ((0.8, 0.3), (1.2, 1.0)):  # wider when the camera lost the hands
            evidence, nearest, xs = self._evidence(ev.plate, ev.t_start - before, ev.t_end + after)
            open_ = [s for s in evidence if self.shoppers[s].session in self.sessions]
            if open_ and min(nearest[s] for s in open_) < self.config.reach:
                break
        if not open_:
            return {}, {}
        weight = {s: evidence[s] ** 2 + 1e-12 for s in open_}
        z = sum(weight.values())
        post = {s: w / z for s, w in weight.items()}
        if min(nearest[s] for s in open_) > self.config.reach:
            post = {s: p * 0.5 for s, p in post.items()}  # nobody's hand was at the plate: doubt it
        return post, xs

    def _resolve(self, ev: WeightEvent) -> None:
        cfg = self.config
        self.weight_events.append(ev)
        who, xs = self._who(ev)
        if not who:
            ev.note = "no shopper near the plate"
            return self._unassigned(ev)
        ev.kind = "pick" if ev.delta < 0 else "return"
        grams = abs(ev.delta)
        scored = []  # (log score, shopper, product, units, misplaced)
        for sid, p_who in who.items():
            if p_who < 1e-4:
                continue
            x = xs.get(sid)
            session = self.sessions[self.shoppers[sid].session]
            if ev.kind == "pick":
                options = [
                    (prod, n, prod not in self.facing_x[ev.plate]) for prod, n in self.stock[ev.plate].items() if n > 0
                ]
            else:
                held = [(prod, sum(u for u, _ in lines)) for prod, lines in session.cart.items()]
                options = [(prod, n, ev.plate not in self.home_plates.get(prod, ())) for prod, n in held if n > 0]
            for prod, available, foreign in options:
                w = self.layout.unit_weight.get(prod)
                if not w:
                    continue
                n = int(min(max(round(grams / w), 1), available, cfg.max_units))
                sigma = math.sqrt(cfg.weight_sigma**2 + n * (cfg.unit_spread * w) ** 2)
                score = -0.5 * ((grams - n * w) / sigma) ** 2 + math.log(p_who)
                fx = self.facing_x[ev.plate].get(prod) if not foreign else self.foreign_x.get((ev.plate, prod))
                if fx is not None and x is not None:
                    score += -0.5 * ((x[0] - fx) / x[1]) ** 2
                score += (n - 1) * math.log(cfg.extra_unit_odds)
                if ev.kind == "return" and foreign:
                    score += math.log(0.3)  # most put-backs go where they came from
                scored.append((score, sid, prod, n, foreign, abs(grams - n * w) / sigma))
        if not scored:
            ev.note = "no product on the plate or in the cart explains the change"
            sid = max(who, key=who.get)
            return self._unassigned(ev, sid)
        top = max(s[0] for s in scored)
        z = sum(math.exp(s[0] - top) for s in scored)
        best = max(scored, key=lambda s: s[0])
        _, sid, prod, n, foreign, resid = best
        joint = 1 / z
        p_shopper = sum(math.exp(s[0] - top) for s in scored if s[1] == sid) / z
        p_product = sum(math.exp(s[0] - top) for s in scored if s[2] == prod and s[3] == n) / z
        if resid > 4:
            joint *= 0.2
            ev.note = f"weight change {ev.delta:+.0f} g is {resid:.1f} sigma from {n} x {prod}"
        ev.shopper, ev.product, ev.units, ev.misplaced = sid, prod, n, foreign
        seen = xs.get(sid)
        if seen is not None and seen[2] is not None and joint > 0.95:
            self._body_sq += (seen[2] - seen[0]) ** 2
            self._body_n += 1
        ev.confidence, ev.shopper_confidence, ev.product_confidence = joint, p_shopper, p_product
        session = self.sessions[self.shoppers[sid].session]
        ev.session = session.visit_id
        ev.hand_x = xs.get(sid)
        session.events.append(ev)
        if ev.kind == "pick":
            self.stock[ev.plate][prod] -= n
            session.cart.setdefault(prod, []).append((n, joint))
        else:
            self.stock[ev.plate][prod] = self.stock[ev.plate].get(prod, 0) + n
            if foreign and ev.hand_x is not None:
                self.foreign_x[(ev.plate, prod)] = ev.hand_x[0]
            left = n
            lines = session.cart[prod]
            while left and lines:
                u, c = lines[-1]
                take = min(u, left)
                left -= take
                if take == u:
                    lines.pop()
                else:
                    lines[-1] = (u - take, c)
            if lines:
                lines[-1] = (lines[-1][0], min(lines[-1][1], joint))

    def _unassigned(self, ev: WeightEvent, sid: int | None = None) -> None:
        if sid is not None:
            session = self.sessions[self.shoppers[sid].session]
            ev.session = session.visit_id
            session.events.append(ev)
            session.reasons.append(f"plate {self.layout.plate_ids[ev.plate]}: {ev.note}")
        else:
            self.problems.append(
                SensorProblem(
                    Problem(
                        "unattributed_change",
                        "plate_id",
                        self.layout.plate_ids[ev.plate],
                        f"plate {self.layout.plate_ids[ev.plate]} changed by {ev.delta:+.0f} g at "
                        f"{_iso(ev.t_start)} with no shopper near it; sent to review",
                    ),
                    None,
                )
            )

    # ------------------------------------------------------------ receipts

    def _close_due(self, now: float) -> None:
        cfg = self.config
        for _visit, session in list(self.sessions.items()):
            if session.close_at is not None and session.close_at <= now:
                self._close(session, now)
            elif (
                session.close_at is None
                and session.members
                and all(now - self.shoppers[m].last_seen > cfg.lost_after for m in session.members)
            ):
                session.reasons.append(f"no exit seen: nobody of this trip was seen for {cfg.lost_after:.0f} s")
                self._close(session, now)

    def _close(self, session: _Session, now: float) -> None:
        cfg = self.config
        del self.sessions[session.visit_id]
        members = [self.shoppers[m] for m in session.members]
        exited = max((m.exited or m.last_seen) for m in members)
        lines = {}
        for prod, held in session.cart.items():
            units = sum(u for u, _ in held)
            if units > 0:
                lines[prod] = (units, min(c for _, c in held))
        reasons = list(session.reasons)
        for prod, (units, conf) in lines.items():
            if conf < cfg.review_below:
                reasons.append(f"{prod} x{units}: confidence {conf:.2f} below {cfg.review_below}")
        dwell = {}
        for m in members:
            for aisle, s in m.dwell.items():
                dwell[f"aisle-{aisle + 1}"] = round(dwell.get(f"aisle-{aisle + 1}", 0.0) + s, 1)
        receipt = Receipt(
            session.visit_id,
            lines,
            bool(reasons),
            reasons,
            session.entered,
            exited,
            now,
            time.time(),
            self._events(session, lines, exited, dwell, reasons),
            dict(sorted(dwell.items())),
        )
        for label, sid in list(self.label_shopper.items()):
            if self.shoppers[sid].session == session.visit_id:
                del self.label_shopper[label]
        for m in members:
            if m.exited is None:
                m.exited = exited
        self.receipts.append(receipt)
        self._out.append(receipt)

    def _events(self, session: _Session, lines, exited: float, dwell: dict, reasons: list[str]) -> list[dict]:
        store, visit = self.layout.store_id, session.visit_id
        base = {"type": "track", "anonymousId": f"visit-{visit}", "context": {"channel": "store", "store_id": store}}
        enter = {
            "store_id": store,
            "entry_method": "none" if session.entry_method == "group" else session.entry_method,
            "visit_id": visit,
            "group_size": len(session.members),
        }
        if session.entry_token and session.entry_method != "none":
            enter["entry_token"] = session.entry_token
        if session.gate_id:
            enter["gate_id"] = session.gate_id
        out = [
            dict(
                base, event="Store Entered", messageId=f"{visit}-in", timestamp=_iso(session.entered), properties=enter
            )
        ]
        for k, ev in enumerate(sorted(session.events, key=lambda e: e.t_start)):
            if not ev.product:
                continue
            item = {
                "store_id": store,
                "product_id": ev.product,
                "quantity": ev.units,
                "visit_id": visit,
                "plate_id": self.layout.plate_ids[ev.plate],
                "confidence": round(ev.confidence, 4),
            }
            if ev.kind == "pick":
                out.append(
                    dict(
                        base,
                        event="Product Picked",
                        messageId=f"{visit}-p{k}",
                        timestamp=_iso(ev.t_start),
                        properties=item,
                    )
                )
            else:
                out.append(
                    dict(
                        base,
                        event="Product Returned To Shelf",
                        messageId=f"{visit}-r{k}",
                        timestamp=_iso(ev.t_start),
                        properties=dict(item, misplaced=ev.misplaced),
                    )
                )
        out.append(
            dict(
                base,
                event="Store Exited",
                messageId=f"{visit}-out",
                timestamp=_iso(exited),
                properties={
                    "store_id": store,
                    "visit_id": visit,
                    "aisle_dwell": dwell,
                    "dwell_seconds": round(exited - session.entered, 1),
                    **(
                        {"exit_reason": "; ".join(r for r in reasons if r.startswith("no exit"))}
                        if any(r.startswith("no exit") for r in reasons)
                        else {}
                    ),
                },
            )
        )
        if lines:
            products = [
                {
                    "product_id": p,
                    "quantity": q,
                    "price": self.layout.prices.get(p, 0.0),
                    "confidence": round(c, 4),
                    "review": c < self.config.review_below,
                }
                for p, (q, c) in sorted(lines.items())
            ]
            total = round(sum(x["quantity"] * x["price"] for x in products), 2)
            receipt = {
                "order_id": f"R-{visit}",
                "visit_id": visit,
                "products": products,
                "total": total,
                "revenue": total,
                "currency": self.config.currency,
                "review_required": bool(reasons),
            }
            if session.entry_method == "payment_card" and session.entry_token:
                receipt["payment_token"] = session.entry_token
            out.append(
                dict(
                    base,
                    event="Order Completed",
                    messageId=f"{visit}-receipt",
                    timestamp=_iso(exited + 1),
                    properties=receipt,
                )
            )
        return out

    # ------------------------------------------------------------ output

    def poll(self) -> list[Receipt]:
        """Receipts closed since the last poll."""
        out, self._out = self._out, []
        return out

    def close(self) -> list[Receipt]:
        """End of stream: work through everything buffered and close every open trip."""
        if self._epoch is not None:
            last = max([self.newest] + [t for t, _, _ in self._frames] + [t for t, _, _ in self._gate])
            self._advance(last + self.config.chunk + self.config.exit_grace + 2 * TICK * self.config.settle_blocks)
        end = self.processed_until or 0.0
        for session in list(self.sessions.values()):
            if session.close_at is None:
                session.reasons.append("no exit seen before the end of the stream")
            self._close(session, end)
        return self.poll()
