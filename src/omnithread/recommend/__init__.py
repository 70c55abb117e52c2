"""Recommendations from every channel: interactions, models, evaluation, surfaces and serving."""

from omnithread.recommend.metrics import (
    Split,
    average_precision_at_k,
    evaluate_model,
    ndcg_at_k,
    random_split,
    recall_at_k,
    temporal_split,
)
from omnithread.recommend.models import (
    ALS,
    DLAE,
    EASE,
    MODELS,
    Blend,
    ItemKNN,
    Popularity,
    Recommender,
    RP3Beta,
    load_model,
)

__all__ = [
    "Recommender",
    "Popularity",
    "ItemKNN",
    "RP3Beta",
    "EASE",
    "DLAE",
    "ALS",
    "Blend",
    "MODELS",
    "load_model",
    "Split",
    "temporal_split",
    "random_split",
    "evaluate_model",
    "ndcg_at_k",
    "recall_at_k",
    "average_precision_at_k",
]
