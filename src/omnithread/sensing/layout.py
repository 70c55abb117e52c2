"""A checkout-free store's floor and shelves: gondolas, shelves, weight plates and their planogram.

Coordinates are metres on the store floor: ``x`` runs along the gondolas, ``y``
across the aisles, ``z`` up. Gondola ``g`` stands at ``y = g * AISLE`` and faces
``+y``; the aisle in front of it is aisle ``g``. Each shelf carries a row of weight
plates; each plate holds one or more facings, each facing a product at a known
``x`` with a stock of units of known unit weight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from omnithread.errors import InvalidRequestError

__all__ = ["Facing", "Layout", "generate_layout", "AISLE", "PLATE_WIDTH"]

AISLE = 2.5  # metres between gondola fronts
PLATE_WIDTH = 0.4
SHELF_Z0, SHELF_DZ = 0.25, 0.35
FRONT = 0.2  # where a hand meets the shelf, in front of the gondola line
GATE = (-2.0, 0.5)  # the gate, at the head of aisle 0


@dataclass(frozen=True)
class Facing:
    """One product's place on a plate."""

    product_id: str
    x: float  # centre of the facing
    unit_weight: float  # grams
    stock: int


@dataclass
class Layout:
    """Everything the sensing engine knows about a store before the doors open."""

    store_id: str
    gondolas: int
    shelves: int
    plates_per_shelf: int
    plate_ids: list[str]
    facings: list[list[Facing]]
    tare: list[float]  # grams each plate weighs empty, as installed (it drifts)
    prices: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.plate_ids)
        self.index = {p: i for i, p in enumerate(self.plate_ids)}
        g = np.array([i // (self.shelves * self.plates_per_shelf) for i in range(n)])
        s = np.array([(i // self.plates_per_shelf) % self.shelves for i in range(n)])
        j = np.array([i % self.plates_per_shelf for i in range(n)])
        self.plate_gondola, self.plate_shelf = g, s
        self.plate_x0 = j * PLATE_WIDTH
        self.plate_y = g * AISLE + FRONT
        self.plate_z = SHELF_Z0 + s * SHELF_DZ
        self.home: dict[str, list[tuple[int, float]]] = {}
        for p, fs in enumerate(self.facings):
            for f in fs:
                self.home.setdefault(f.product_id, []).append((p, f.x))
        self.unit_weight = {f.product_id: f.unit_weight for fs in self.facings for f in fs}

    @property
    def plates(self) -> int:
        return len(self.plate_ids)

    @property
    def length(self) -> float:
        return self.plates_per_shelf * PLATE_WIDTH

    def initial_weight(self) -> np.ndarray:
        """Each plate's weight when the store opens: tare plus its stock."""
        return np.array([t + sum(f.stock * f.unit_weight for f in fs) for t, fs in zip(self.tare, self.facings)])

    def aisle_of(self, y: np.ndarray) -> np.ndarray:
        """The aisle a floor position is in (-1 outside the gondola rows)."""
        a = np.floor(np.asarray(y) / AISLE).astype(np.int64)
        return np.where((a >= 0) & (a < self.gondolas), a, -1)

    def reach_point(self, plate: int, x: float | None = None) -> np.ndarray:
        """Where a hand is when it touches ``plate`` (at ``x`` along it)."""
        cx = self.plate_x0[plate] + PLATE_WIDTH / 2 if x is None else x
        return np.array([cx, self.plate_y[plate], self.plate_z[plate] + 0.05])

    def stand_point(self, plate: int, x: float | None = None) -> np.ndarray:
        cx = self.plate_x0[plate] + PLATE_WIDTH / 2 if x is None else x
        return np.array([cx, self.plate_gondola[plate] * AISLE + FRONT + 0.7, 1.65])

    def to_dict(self) -> dict:
        return {
            "store_id": self.store_id,
            "gondolas": self.gondolas,
            "shelves": self.shelves,
            "plates_per_shelf": self.plates_per_shelf,
            "plate_ids": self.plate_ids,
            "facings": [[asdict(f) for f in fs] for fs in self.facings],
            "tare": self.tare,
            "prices": self.prices,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Layout":
        try:
            return cls(
                data["store_id"],
                int(data["gondolas"]),
                int(data["shelves"]),
                int(data["plates_per_shelf"]),
                list(data["plate_ids"]),
                [[Facing(**f) for f in fs] for fs in data["facings"]],
                [float(t) for t in data["tare"]],
                dict(data.get("prices", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequestError("layout", type(exc).__name__, f"not a store layout: {exc}") from exc


def generate_layout(
    store_id: str,
    product_ids,
    unit_weights,
    prices,
    *,
    gondolas: int = 20,
    shelves: int = 6,
    plates_per_shelf: int = 12,
    facings_per_plate: int = 2,
    seed: int = 0,
    same_weight_share: float = 0.0,
    stock: int | None = None,
) -> tuple[Layout, dict[str, float]]:
    """Lay products out on plates in catalogue order, ``facings_per_plate`` to a plate.

    Products are repeated when there are more facings than products. With
    ``same_weight_share`` a share of plates get two different products of the same
    unit weight side by side (two flavours of one yoghurt): only where the hand is
    tells them apart. ``stock`` units per facing (default: about 6 kg of the product, 3 to 12
    units). Returns the layout and the unit weights it used.
    """
    if gondolas < 1 or shelves < 1 or plates_per_shelf < 1 or facings_per_plate < 1:
        raise InvalidRequestError("gondolas", gondolas, "a layout needs at least one gondola, shelf, plate and facing")
    rng = np.random.default_rng([seed, 41])
    product_ids = [str(p) for p in product_ids]
    weights = {p: float(w) for p, w in zip(product_ids, unit_weights)}
    price = {p: float(v) for p, v in zip(product_ids, prices)}
    n_plates = gondolas * shelves * plates_per_shelf
    plate_ids = [
        f"G{g + 1:02d}-S{s + 1}-P{j + 1:02d}"
        for g in range(gondolas)
        for s in range(shelves)
        for j in range(plates_per_shelf)
    ]
    facings, k = [], 0
    width = PLATE_WIDTH / facings_per_plate
    used = set()
    for p in range(n_plates):
        x0 = (p % plates_per_shelf) * PLATE_WIDTH
        twin = facings_per_plate >= 2 and rng.random() < same_weight_share
        row = []
        for f in range(facings_per_plate):
            product = product_ids[k % len(product_ids)]
            k += 1
            if product in used:  # one home per product keeps the truth simple; repeat as a new variant
                product = f"{product}-v{k // len(product_ids)}"
                weights.setdefault(product, weights[product.rsplit("-v", 1)[0]])
                price.setdefault(product, price[product.rsplit("-v", 1)[0]])
            used.add(product)
            if twin and f == 1:
                weights[product] = weights[row[0].product_id]
            w = weights[product]
            units = stock if stock is not None else int(np.clip(round(6000 / w), 3, 12))
            row.append(Facing(product, round(x0 + (f + 0.5) * width, 3), w, units))
        facings.append(row)
    tare = [round(float(t), 1) for t in rng.uniform(900, 1100, n_plates)]
    layout = Layout(
        store_id,
        gondolas,
        shelves,
        plates_per_shelf,
        plate_ids,
        facings,
        tare,
        {f.product_id: price[f.product_id] for fs in facings for f in fs},
    )
    return layout, weights
