"""Turn simulated activity into the raw files real sources send, and the truth apart.

Sources: ``events.jsonl`` (web, app and voice, as a Segment-compatible collector
would archive them, with duplicates, late arrivals, skewed device clocks and a
few malformed lines), ``store_events.jsonl`` (loyalty sign-ups at store desks and
checkout-free store events), and one till CSV per ordinary store. The truth:
who owns each identifier, every true order line (including the hold-out days,
which no source sees), and where every malformed line was put.
"""

from __future__ import annotations

import csv
import heapq
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson

from omnithread.sim.activity import Activity
from omnithread.sim.world import CATEGORY_NAMES, World

__all__ = ["StoreVisit", "StoreEventLayer", "IdealStoreEvents", "LineSink", "render", "iso"]

UTC = timezone.utc
MALFORMED_KINDS = (
    "truncated_json",
    "not_utf8",
    "missing_identity",
    "unknown_call",
    "price_not_number",
    "future_timestamp",
    "oversized",
    "not_an_object",
)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Draws:
    """Uniform numbers drawn in blocks, so per-event randomness stays cheap and seeded."""

    def __init__(self, rng: np.random.Generator, block: int = 65_536):
        self.rng, self.block = rng, block
        self._values: list[float] = []

    def __call__(self) -> float:
        if not self._values:
            self._values = self.rng.random(self.block).tolist()
        return self._values.pop()


class LineSink:
    """Writes JSON lines with the noise of real delivery: late arrivals, retries, breakage."""

    def __init__(
        self,
        path: Path,
        draw: _Draws,
        duplicate_rate: float,
        late_rate: float,
        malformed_rate: float,
        malformed: list[dict],
    ):
        self.path = path
        self._handle = open(path, "wb")
        self.draw = draw
        self.duplicate_rate, self.late_rate, self.malformed_rate = duplicate_rate, late_rate, malformed_rate
        self.malformed = malformed
        self.lines = 0
        self._delayed: list[tuple[int, int, bytes]] = []
        self._sequence = 0

    def write(self, payload: dict) -> None:
        line = orjson.dumps(payload)
        if self.draw() < self.late_rate:
            self._delay(line, 10 + int(self.draw() * 2_000))
        else:
            self._emit(line)
        if self.draw() < self.duplicate_rate:
            self._delay(line, 1 + int(self.draw() * 500))
        if self.draw() < self.malformed_rate:
            kind = MALFORMED_KINDS[int(self.draw() * len(MALFORMED_KINDS))]
            number = self._emit(_corrupt(payload, line, kind))
            self.malformed.append({"file": self.path.name, "line": number, "kind": kind})

    def _delay(self, line: bytes, after: int) -> None:
        self._sequence += 1
        heapq.heappush(self._delayed, (self.lines + after, self._sequence, line))

    def _emit(self, line: bytes) -> int:
        """Write a line, then any delayed lines now due; return the line's number."""
        self._handle.write(line + b"\n")
        self.lines += 1
        number = self.lines
        while self._delayed and self._delayed[0][0] <= self.lines:
            self._handle.write(heapq.heappop(self._delayed)[2] + b"\n")
            self.lines += 1
        return number

    def close(self) -> None:
        while self._delayed:
            self._handle.write(heapq.heappop(self._delayed)[2] + b"\n")
            self.lines += 1
        self._handle.close()


def _corrupt(payload: dict, line: bytes, kind: str) -> bytes:
    bad = orjson.loads(line)
    bad["messageId"] = f"{bad.get('messageId', 'm')}-{kind}"
    if kind == "truncated_json":
        return line[: max(1, len(line) // 2)]
    if kind == "not_utf8":
        return line[:-1] + b',"note":"caf\xe9"}'
    if kind == "missing_identity":
        bad.pop("userId", None)
        bad.pop("anonymousId", None)
    elif kind == "unknown_call":
        bad["type"] = "trak"
    elif kind == "price_not_number":
        bad.update(type="track", event="Product Viewed", properties={"product_id": "P00001", "price": "9,99"})
    elif kind == "future_timestamp":
        for key in ("originalTimestamp", "timestamp"):
            if key in bad:
                bad[key] = "2031-01-01T00:00:00.000Z"
        bad["originalTimestamp"] = "2031-01-01T00:00:00.000Z"
        bad.pop("sentAt", None)
    elif kind == "oversized":
        bad.setdefault("properties", {})["blob"] = "x" * 40_000
    elif kind == "not_an_object":
        return orjson.dumps([bad])
    return orjson.dumps(bad)


def _typo(text: str, draw: _Draws) -> str:
    if len(text) < 3:
        return text
    i = 1 + int(draw() * (len(text) - 2))
    op = int(draw() * 4)
    if op == 0:
        return text[:i] + text[i + 1 :]
    if op == 1:
        return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]
    if op == 2:
        return text[:i] + "aeiou"[int(draw() * 5)] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


@dataclass
class StoreVisit:
    """One trip through a checkout-free store, as the truth knows it."""

    visit_id: str
    person: int
    store_id: str
    entered_at: float
    lines: list[tuple[str, int, float, bool]]  # product_id, quantity, unit price, returned to shelf
    entry_method: str
    entry_token: str | None
    payment_token: str | None


class StoreEventLayer(Protocol):
    """How a checkout-free store's trips reach the sources.

    The sensing issue plugs in a layer that writes shelf and camera signals and
    lets the sensing engine turn them into these events; until then the ideal
    layer writes the events a perfect engine would produce.
    """

    def begin(self, world) -> None:
        """Called once before the first trip, with the world (catalogue, stores)."""

    def visit_events(self, visit: StoreVisit) -> list[dict]: ...

    def finish(self) -> list[dict]:
        """Called once after the last trip; returns events held back until then."""


class IdealStoreEvents:
    """The events of a trip exactly as they happened."""

    def begin(self, world) -> None:
        return None

    def finish(self) -> list[dict]:
        return []

    def visit_events(self, visit: StoreVisit) -> list[dict]:
        ctx = {"channel": "store", "store_id": visit.store_id}
        anon = f"visit-{visit.visit_id}"
        t = visit.entered_at
        base = {"anonymousId": anon, "context": ctx}
        events = [
            dict(
                base,
                type="track",
                event="Store Entered",
                messageId=f"{visit.visit_id}-in",
                timestamp=iso(t),
                properties={
                    "store_id": visit.store_id,
                    "entry_method": visit.entry_method,
                    "visit_id": visit.visit_id,
                    **({"entry_token": visit.entry_token} if visit.entry_token else {}),
                },
            )
        ]
        bought = []
        for k, (product, quantity, price, returned) in enumerate(visit.lines):
            t += 40 + 7 * k
            item = {"store_id": visit.store_id, "product_id": product, "quantity": quantity, "visit_id": visit.visit_id}
            events.append(
                dict(
                    base,
                    type="track",
                    event="Product Picked",
                    messageId=f"{visit.visit_id}-p{k}",
                    timestamp=iso(t),
                    properties=item,
                )
            )
            if returned:
                events.append(
                    dict(
                        base,
                        type="track",
                        event="Product Returned To Shelf",
                        messageId=f"{visit.visit_id}-r{k}",
                        timestamp=iso(t + 20),
                        properties=item,
                    )
                )
            else:
                bought.append({"product_id": product, "quantity": quantity, "price": price})
        t += 60
        events.append(
            dict(
                base,
                type="track",
                event="Store Exited",
                messageId=f"{visit.visit_id}-out",
                timestamp=iso(t),
                properties={
                    "store_id": visit.store_id,
                    "visit_id": visit.visit_id,
                    "dwell_seconds": round(t - visit.entered_at, 1),
                },
            )
        )
        if bought:
            total = round(sum(b["quantity"] * b["price"] for b in bought), 2)
            receipt = {
                "order_id": f"R-{visit.visit_id}",
                "products": bought,
                "total": total,
                "revenue": total,
                "currency": "GBP",
            }
            if visit.payment_token:
                receipt["payment_token"] = visit.payment_token
            events.append(
                dict(
                    base,
                    type="track",
                    event="Order Completed",
                    messageId=f"{visit.visit_id}-receipt",
                    timestamp=iso(t + 1),
                    properties=receipt,
                )
            )
        return events


@dataclass
class _Truth:
    identifiers: dict[str, list] = field(default_factory=lambda: {"type": [], "value": [], "person": []})
    orders: dict[str, list] = field(
        default_factory=lambda: {
            "order_id": [],
            "person": [],
            "channel": [],
            "store_id": [],
            "at": [],
            "product_id": [],
            "quantity": [],
            "price": [],
            "period": [],
        }
    )

    def identifier(self, kind: str, value: str, person: int) -> None:
        if value:
            self.identifiers["type"].append(kind)
            self.identifiers["value"].append(value)
            self.identifiers["person"].append(person)

    def line(self, order_id, person, channel, store_id, at, product_id, quantity, price, observed) -> None:
        for key, value in zip(
            self.orders,
            (
                order_id,
                person,
                channel,
                store_id,
                at,
                product_id,
                quantity,
                price,
                "observed" if observed else "holdout",
            ),
        ):
            self.orders[key].append(value)


class _Renderer:
    def __init__(
        self, world: World, activity: Activity, rng: np.random.Generator, out: Path, store_layer: StoreEventLayer
    ):
        self.w, self.a, self.out = world, activity, out
        self.cfg = world.config
        self.draw = _Draws(rng)
        self.rng = rng
        self.truth = _Truth()
        self.malformed: list[dict] = []
        self.store_layer = store_layer
        self.counter = 0
        n = self.cfg.people
        self.skew = np.where(rng.random((n, 3)) < self.cfg.skewed_device_share, rng.normal(0, 3600, (n, 3)), 0.0)
        self.consented = rng.random(n) < 0.85
        self.first_session_done = np.zeros(n, bool)

    def message_id(self) -> str:
        self.counter += 1
        return f"sim{self.cfg.seed}-{self.counter:010d}"

    def stamp(self, payload: dict, true_at: float, skew: float) -> dict:
        delay = self.draw() * 5
        payload["originalTimestamp"] = iso(true_at + skew)
        payload["sentAt"] = iso(true_at + skew + delay)
        payload["receivedAt"] = iso(true_at + delay + 0.05 + self.draw() * 0.3)
        return payload

    # -- online -----------------------------------------------------------------------
    def online(self, sink: LineSink) -> None:
        s, v = self.a.sessions, self.a.views
        order = np.argsort(s["at"], kind="stable")
        starts = np.searchsorted(v["session"], np.arange(len(s["person"])))
        ends = np.searchsorted(v["session"], np.arange(len(s["person"])), side="right")
        for i in order.tolist():
            self.session(sink, i, v, int(starts[i]), int(ends[i]))

    def session(self, sink: LineSink, i: int, v: dict, lo: int, hi: int) -> None:
        s, w = self.a.sessions, self.w
        p = int(s["person"][i])
        at = float(s["at"][i])
        observed = at < self.a.end_observed
        slot = int(s["slot"][i])
        channel = "app" if s["channel"][i] else "web"
        device = str(w.devices[p, slot])
        skew = float(self.skew[p, slot])
        logged_in = bool(s["logged_in"][i]) or not self.first_session_done[p]
        user = str(w.account[p]) if logged_in else None
        ctx = {"channel": channel, "library": {"name": "analytics-ios" if channel == "app" else "analytics.js"}}
        base = {"anonymousId": device, "context": ctx}
        if user:
            base["userId"] = user
        products = w.product_ids[v["product"][lo:hi]].tolist()
        t = at
        events: list[tuple[float, dict]] = []

        def add(payload: dict, gap: float) -> None:
            nonlocal t
            t += gap
            events.append((t, payload))

        if channel == "web":
            add(dict(base, type="page", name="Home", properties={"path": "/"}), 0)
        else:
            add(dict(base, type="screen", name="Home"), 0)
        if user:
            add(self.identify(p, base, first=not self.first_session_done[p]), 2)
            if not self.first_session_done[p]:
                add(
                    dict(
                        base,
                        type="track",
                        event="Consent Updated",
                        properties={
                            "purposes": {
                                "analytics": True,
                                "personalisation": bool(self.consented[p]),
                                "biometric": bool(w.palm[p]),
                            },
                            "source": f"{channel} sign-up",
                        },
                    ),
                    3,
                )
                if w.loyalty_card[p] and self.draw() < self.cfg.card_link_share:
                    add(
                        dict(
                            base,
                            type="track",
                            event="Loyalty Card Linked",
                            properties={"loyalty_card": str(w.loyalty_card[p])},
                        ),
                        5,
                    )
            self.first_session_done[p] = True
        if self.draw() < 0.3:
            category = CATEGORY_NAMES[int(w.product_category[v["product"][lo]])]
            add(dict(base, type="track", event="Products Searched", properties={"query": category}), 8)
        cart = []
        for k, product in enumerate(products):
            j = int(v["product"][lo + k])
            item = {
                "product_id": product,
                "category": CATEGORY_NAMES[int(w.product_category[j])],
                "price": float(w.product_price[j]),
            }
            add(dict(base, type="track", event="Product Viewed", properties=item), 20 + 40 * self.draw())
            if v["added"][lo + k]:
                add(dict(base, type="track", event="Product Added", properties=dict(item, quantity=1)), 15)
                if v["removed"][lo + k]:
                    add(dict(base, type="track", event="Product Removed", properties=dict(item, quantity=1)), 30)
                elif product not in (c["product_id"] for c in cart):
                    cart.append(dict(item, quantity=1 + int(self.draw() < 0.15)))
        if cart and user and self.draw() < 0.55:
            order_id = f"W{self.cfg.seed}-{i:08d}"
            total = round(sum(c["price"] * c["quantity"] for c in cart), 2)
            card = self.card(p)
            add(dict(base, type="track", event="Checkout Started", properties={"value": total, "products": cart}), 30)
            props = {"order_id": order_id, "total": total, "revenue": total, "currency": "GBP", "products": cart}
            if card:
                props["payment_token"] = card
            add(dict(base, type="track", event="Order Completed", properties=props), 60)
            for c in cart:
                self.truth.line(order_id, p, channel, None, t, c["product_id"], c["quantity"], c["price"], observed)
            if observed and self.draw() < 0.03:
                add(
                    dict(
                        base,
                        type="track",
                        event="Order Refunded",
                        properties={"order_id": order_id, "total": total, "currency": "GBP"},
                    ),
                    86400 * 3,
                )
        if observed:
            for when, payload in events:
                payload["messageId"] = self.message_id()
                sink.write(self.stamp(payload, when, skew))

    def identify(self, p: int, base: dict, first: bool) -> dict:
        w = self.w
        email = str(w.emails[p, 1]) if w.emails[p, 1] and self.draw() < 0.3 else str(w.emails[p, 0])
        traits = {"email": email if self.draw() < 0.8 else email.upper()}
        if first or self.draw() < 0.2:
            traits.update(
                firstName=str(w.first_name[p]).title(),
                lastName=str(w.last_name[p]).title(),
                address={
                    "street": str(w.street[p]).title(),
                    "city": str(w.town[p]).title(),
                    "postalCode": str(w.postcode[p]),
                },
                birthday=str(w.birth_date[p]),
            )
            traits["phone"] = str(w.phone[p])
            traits["plan"] = "member" if w.member[p] else "standard"  # membership, as Segment's `plan` trait
        if base["context"]["channel"] == "app" and w.app_code[p]:
            traits["app_code"] = str(w.app_code[p])  # the app shows this code at a checkout-free store's gate
        payload = dict(base, type="identify", traits=traits)
        payload["context"] = dict(
            base["context"],
            consent={"categoryPreferences": {"analytics": True, "personalisation": bool(self.consented[p])}},
        )
        return payload

    def card(self, p: int) -> str | None:
        cards = [c for c in self.w.cards[p].tolist() if c]
        if not cards or self.draw() < self.cfg.cash_rate * 0.2:
            return None
        return cards[int(self.draw() * len(cards))]

    # -- stores -----------------------------------------------------------------------
    def stores(self, sink: LineSink, till_dir: Path) -> list[Path]:
        vi, li, w = self.a.visits, self.a.lines, self.w
        starts = np.searchsorted(li["visit"], np.arange(len(vi["person"])))
        ends = np.searchsorted(li["visit"], np.arange(len(vi["person"])), side="right")
        till_paths = {}
        writers = {}
        for s, store_id in enumerate(w.store_ids.tolist()):
            if not w.store_checkout_free[s]:
                path = till_dir / f"till-{store_id}.csv"
                handle = open(path, "w", newline="")
                writer = csv.writer(handle)
                writer.writerow(
                    [
                        "store_id",
                        "till_id",
                        "timestamp",
                        "order_id",
                        "product_id",
                        "quantity",
                        "price",
                        "loyalty_card",
                        "payment_token",
                        "currency",
                    ]
                )
                writers[s], till_paths[s] = (handle, writer), path
        signed_up = np.zeros(self.cfg.people, bool)
        self.store_layer.begin(w)
        for i in np.argsort(vi["at"], kind="stable").tolist():
            p, s, at = int(vi["person"][i]), int(vi["store"][i]), float(vi["at"][i])
            observed = at < self.a.end_observed
            lines = [
                (
                    str(w.product_ids[li["product"][k]]),
                    int(li["quantity"][k]),
                    float(w.product_price[li["product"][k]]),
                    bool(li["returned"][k]),
                )
                for k in range(int(starts[i]), int(ends[i]))
            ]
            if observed and w.loyalty_card[p] and not signed_up[p]:
                signed_up[p] = True
                sink.write(self.signup(p, at - 60, str(w.store_ids[s])))
            order_id = f"{w.store_ids[s]}-{self.cfg.seed}-{i:08d}"  # the seed keeps shards' receipts apart
            store_id = str(w.store_ids[s])
            if w.store_checkout_free[s]:
                visit = self.checkout_free_visit(i, p, store_id, at, lines)
                order_id = f"R-{visit.visit_id}"
                if observed:
                    for payload in self.store_layer.visit_events(visit):
                        sink.write(payload)
            elif observed:
                self.till_order(writers[s][1], p, store_id, at, order_id, lines)
            for product, quantity, price, returned in lines:
                if not returned:
                    self.truth.line(order_id, p, "store", store_id, at, product, quantity, price, observed)
        for payload in self.store_layer.finish():
            sink.write(payload)
        for handle, _ in writers.values():
            handle.close()
        return list(till_paths.values())

    def signup(self, p: int, at: float, store_id: str) -> dict:
        w, typo = self.w, self.cfg.typo_rate

        def noisy(text: str) -> str:
            return _typo(text, self.draw) if self.draw() < typo else text

        traits = {
            "firstName": noisy(str(w.first_name[p]).title()),
            "lastName": noisy(str(w.last_name[p]).title()),
            "address": {
                "street": noisy(str(w.street[p]).title()),
                "city": str(w.town[p]).title(),
                "postalCode": str(w.postcode[p]) if self.draw() > typo / 2 else "",
            },
            "birthday": str(w.birth_date[p]),
            "loyalty_card": str(w.loyalty_card[p]),
        }
        if self.draw() < 0.6:
            digits = str(w.phone[p])
            traits["phone"] = "0" + digits[3:] if self.draw() < 0.5 else digits
        anon = f"signup-{self.message_id()}"
        self.truth.identifier("signup", anon, p)
        return {
            "type": "identify",
            "anonymousId": anon,
            "messageId": self.message_id(),
            "timestamp": iso(at),
            "context": {"channel": "store", "store_id": store_id, "source": "loyalty desk"},
            "traits": traits,
        }

    def checkout_free_visit(self, i: int, p: int, store_id: str, at: float, lines) -> StoreVisit:
        w = self.w
        choice = self.draw()
        cards = [c for c in w.cards[p].tolist() if c]
        if w.app_code[p] and choice < 0.6:
            method, token, pay = "app_code", str(w.app_code[p]), (cards[0] if cards else None)
        elif w.palm[p] and choice < 0.85:
            method, token, pay = "palm", str(w.palm[p]), (cards[0] if cards else None)
        elif cards:
            method, token, pay = "payment_card", cards[0], cards[0]
        else:
            method, token, pay = "none", None, None
        visit_id = f"V{self.cfg.seed}-{i:08d}"
        self.truth.identifier("store_visit", f"visit-{visit_id}", p)
        return StoreVisit(visit_id, p, store_id, at, lines, method, token, pay)

    def till_order(self, writer, p: int, store_id: str, at: float, order_id: str, lines) -> None:
        w = self.w
        card = str(w.loyalty_card[p]) if w.loyalty_card[p] and self.draw() > self.cfg.forgot_card_rate else ""
        pay = "" if self.draw() < self.cfg.cash_rate else (self.card(p) or "")
        self.truth.identifier("till_order", f"till:{store_id}:{order_id}", p)
        till = f"T{1 + int(self.draw() * 4)}"
        stamp = datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        for product, quantity, price, _ in lines:
            price_text = f"{price:.2f}"
            if self.draw() < self.cfg.malformed_rate:
                price_text = "N/A"
                self.malformed.append({"file": f"till-{store_id}.csv", "order_id": order_id, "kind": "till_price"})
            writer.writerow([store_id, till, stamp, order_id, product, quantity, price_text, card, pay, "GBP"])

    # -- voice ------------------------------------------------------------------------
    def voice(self, sink: LineSink) -> None:
        vo, vl, w = self.a.voice, self.a.voice_lines, self.w
        starts = np.searchsorted(vl["order"], np.arange(len(vo["person"])))
        ends = np.searchsorted(vl["order"], np.arange(len(vo["person"])), side="right")
        for i in np.argsort(vo["at"], kind="stable").tolist():
            p, at = int(vo["person"][i]), float(vo["at"][i])
            observed = at < self.a.end_observed
            order_id = f"A{self.cfg.seed}-{i:08d}"
            products = [
                {
                    "product_id": str(w.product_ids[vl["product"][k]]),
                    "quantity": 1,
                    "price": float(w.product_price[vl["product"][k]]),
                }
                for k in range(int(starts[i]), int(ends[i]))
            ]
            total = round(sum(x["price"] for x in products), 2)
            for x in products:
                self.truth.line(order_id, p, "voice", None, at, x["product_id"], 1, x["price"], observed)
            if observed:
                props = {
                    "order_id": order_id,
                    "total": total,
                    "revenue": total,
                    "currency": "GBP",
                    "products": products,
                }
                card = self.card(p)
                if card:
                    props["payment_token"] = card
                payload = {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": str(w.account[p]),
                    "anonymousId": str(w.voice_device[p]),
                    "messageId": self.message_id(),
                    "context": {"channel": "voice", "device": {"type": "voice assistant"}},
                    "properties": props,
                }
                sink.write(self.stamp(payload, at, 0.0))

    def identifiers(self) -> None:
        w, t = self.w, self.truth
        columns = {
            "account": w.account,
            "email": w.emails[:, 0],
            "email2": w.emails[:, 1],
            "phone": w.phone,
            "loyalty_card": w.loyalty_card,
            "palm_token": w.palm,
            "app_code": w.app_code,
            "voice_device": w.voice_device,
        }
        for kind, values in columns.items():
            for p, value in enumerate(values.tolist()):
                t.identifier("email" if kind == "email2" else kind, value, p)
        for slot in range(3):
            for p, value in enumerate(w.devices[:, slot].tolist()):
                t.identifier("device", value, p)
        for slot in range(2):
            for p, value in enumerate(w.cards[:, slot].tolist()):
                t.identifier("payment_token", value, p)


def render(
    world: World, activity: Activity, rng: np.random.Generator, out: Path, store_layer: StoreEventLayer | None = None
) -> dict:
    """Write sources under ``out/sources`` and truth under ``out/truth``; return what was written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cfg = world.config
    sources, truth_dir = out / "sources", out / "truth"
    sources.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    r = _Renderer(world, activity, rng, out, store_layer or IdealStoreEvents())
    online = LineSink(
        sources / "events.jsonl", r.draw, cfg.duplicate_rate, cfg.out_of_order_share, cfg.malformed_rate, r.malformed
    )
    r.online(online)
    r.voice(online)
    online.close()
    store_sink = LineSink(
        sources / "store_events.jsonl", r.draw, cfg.duplicate_rate, cfg.out_of_order_share, 0.0, r.malformed
    )
    tills = r.stores(store_sink, sources)
    store_sink.close()
    r.identifiers()
    ids = r.truth.identifiers
    person_ids = world.person_ids
    pq.write_table(
        pa.table(
            {
                "person_id": person_ids[np.array(ids["person"], dtype=np.int64)],
                "type": ids["type"],
                "value": ids["value"],
            }
        ),
        truth_dir / "identifiers.parquet",
    )
    orders = dict(r.truth.orders)
    orders["person_id"] = person_ids[np.array(orders.pop("person"), dtype=np.int64)].tolist()
    orders["at"] = [datetime.fromtimestamp(x, UTC) for x in orders["at"]]
    orders_table = pa.table(orders)
    pq.write_table(orders_table, truth_dir / "orders.parquet")
    pq.write_table(
        orders_table.filter(pc.equal(orders_table["period"], "holdout")), truth_dir / "future_purchases.parquet"
    )
    pq.write_table(
        pa.table(
            {
                "person_id": person_ids,
                "household": world.household,
                "habit": np.array(["online", "store", "both"])[world.habit],
                "member": world.member,
                "home_store": world.store_ids[world.home_store],
                "personalisation_consent": r.consented,
            }
        ),
        truth_dir / "persons.parquet",
    )
    with open(truth_dir / "malformed.jsonl", "wb") as handle:
        for item in r.malformed:
            handle.write(orjson.dumps(item) + b"\n")
    return {
        "sources": [str(sources / "events.jsonl"), str(sources / "store_events.jsonl"), *map(str, tills)],
        "lines": {"events.jsonl": online.lines, "store_events.jsonl": store_sink.lines},
        "order_lines": len(orders["order_id"]),
        "malformed": len(r.malformed),
    }
