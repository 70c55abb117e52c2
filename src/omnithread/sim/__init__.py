"""A simulated retailer with ground truth, for the demo, the tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from omnithread.sim.activity import simulate_activity
from omnithread.sim.config import WorldConfig
from omnithread.sim.render import IdealStoreEvents, StoreEventLayer, StoreVisit, render
from omnithread.sim.world import CATEGORY_NAMES, World, build_world

__all__ = [
    "WorldConfig",
    "World",
    "build_world",
    "simulate",
    "write_reference",
    "StoreEventLayer",
    "StoreVisit",
    "IdealStoreEvents",
]


def simulate(config: WorldConfig, out: Path | str, store_layer: StoreEventLayer | None = None) -> dict:
    """Simulate ``config`` into ``out``: raw sources, ground truth and a manifest.

    The same config (seed included) writes byte-identical files.
    """
    out = Path(out)
    world = build_world(config)
    rng = np.random.default_rng([config.seed, 1])
    activity = simulate_activity(world, rng)
    written = render(world, activity, rng, out, store_layer)
    written["reference"] = write_reference(world, out)
    manifest = {
        "config": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in config.__dict__.items()},
        "people": config.people,
        "products": config.products,
        "stores": world.store_ids.tolist(),
        "checkout_free_stores": world.store_ids[world.store_checkout_free].tolist(),
        **written,
    }
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def write_reference(world: World, out: Path) -> dict:
    """The retailer's catalogue and stock at the end of the observed period, as its systems would
    export them, under ``out/reference``: ``catalogue.csv`` (every product, about 1% off sale, plus a
    few launched in the last three days that nobody has seen yet) and ``inventory.csv`` (units in
    stock online and at each store: a store stocks what it sold in the observed period, about 4% of
    which has run out; online about 2%). Drawn from a generator of their own, so the events are the
    same with or without them."""
    import csv
    from datetime import datetime, time, timedelta, timezone

    cfg = world.config
    rng = np.random.default_rng([cfg.seed, 3])
    folder = out / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    end = datetime.combine(cfg.start + timedelta(days=cfg.days), time(), timezone.utc)
    n = len(world.product_ids)
    launched = max(3, n // 200)
    ids = world.product_ids.tolist() + [f"P{n + i:05d}" for i in range(launched)]
    category = [CATEGORY_NAMES[c] for c in world.product_category.tolist()] + [
        CATEGORY_NAMES[c] for c in rng.integers(0, len(CATEGORY_NAMES), launched).tolist()
    ]
    price = world.product_price.tolist() + np.round(rng.lognormal(2, 0.6, launched), 2).tolist()
    off_sale = set(rng.choice(n, size=max(1, n // 100), replace=False).tolist())
    new_at = [end - timedelta(hours=float(h)) for h in rng.uniform(1, 72, launched)]
    with open(folder / "catalogue.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "name", "category", "price", "available", "launched_at"])
        for i, product in enumerate(ids):
            writer.writerow(
                [
                    product,
                    f"{category[i].title()} {product[1:]}",
                    category[i],
                    f"{price[i]:.2f}",
                    "false" if i in off_sale else "true",
                    new_at[i - n].isoformat() if i >= n else "",
                ]
            )
    import pyarrow.parquet as pq

    orders = pq.read_table(out / "truth" / "orders.parquet", columns=["channel", "store_id", "product_id", "period"])
    sold = {}
    for channel, store, product, period in zip(
        *(orders.column(c).to_pylist() for c in ("channel", "store_id", "product_id", "period"))
    ):
        if channel == "store" and period == "observed":
            sold.setdefault(store, set()).add(product)
    rows = 0
    with open(folder / "inventory.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["store_id", "product_id", "quantity", "as_of"])
        for location in ["online", *world.store_ids.tolist()]:
            carried = [p for p in ids if (p in sold.get(location, ()) if location != "online" else True)]
            carried += [p for p in ids[n:] if location != "online" and rng.random() < 0.5]
            empty = rng.random(len(carried)) < (0.02 if location == "online" else 0.04)
            units = rng.poisson(12, len(carried)) + 1
            for product, out_of_stock, count in zip(carried, empty.tolist(), units.tolist()):
                writer.writerow([location, product, 0 if out_of_stock else count, end.isoformat()])
                rows += 1
    return {
        "catalogue": str(folder / "catalogue.csv"),
        "inventory": str(folder / "inventory.csv"),
        "catalogue_products": len(ids),
        "inventory_rows": rows,
    }
