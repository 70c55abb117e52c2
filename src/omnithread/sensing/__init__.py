"""Checkout-free stores: turn gate, camera and shelf-weight signals into carts, receipts and interest events."""

from omnithread.sensing.engine import Receipt, SensingConfig, SensingEngine, SensorProblem, WeightEvent
from omnithread.sensing.layout import Facing, Layout, generate_layout

__all__ = [
    "Facing",
    "Layout",
    "generate_layout",
    "SensingConfig",
    "SensingEngine",
    "Receipt",
    "SensorProblem",
    "WeightEvent",
]
