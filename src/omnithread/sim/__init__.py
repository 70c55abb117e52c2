"""A simulated retailer with ground truth, for the demo, the tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from omnithread.sim.activity import simulate_activity
from omnithread.sim.config import WorldConfig
from omnithread.sim.render import IdealStoreEvents, StoreEventLayer, StoreVisit, render
from omnithread.sim.world import World, build_world

__all__ = ["WorldConfig", "World", "build_world", "simulate", "StoreEventLayer", "StoreVisit", "IdealStoreEvents"]


def simulate(config: WorldConfig, out: Path | str, store_layer: StoreEventLayer | None = None) -> dict:
    """Simulate ``config`` into ``out``: raw sources, ground truth and a manifest.

    The same config (seed included) writes byte-identical files.
    """
    out = Path(out)
    world = build_world(config)
    rng = np.random.default_rng([config.seed, 1])
    activity = simulate_activity(world, rng)
    written = render(world, activity, rng, out, store_layer)
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
