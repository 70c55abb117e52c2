"""Errors by kind: each family knows its HTTP status, and no edge maps types by hand."""

from __future__ import annotations

import pytest

from omnithread.errors import (
    ConfigError,
    ConflictError,
    EngineError,
    ErasureFailedError,
    InvalidEventError,
    InvalidRequestError,
    NotFoundError,
    NothingToTrainError,
    OmnithreadError,
    Problem,
    UnavailableError,
)
from omnithread.identity.matching import MatchingSkipped
from omnithread.privacy.identifiers import IdentifierError


@pytest.mark.parametrize(
    "error, status",
    [
        (InvalidEventError([Problem("x", "f", "v", "m")]), 400),
        (InvalidRequestError("n", 0, "between 1 and 500"), 400),
        (IdentifierError(Problem("invalid_identifier", "email", "'j***'", "email: not an email")), 400),
        (NotFoundError("person", "p_x"), 404),
        (ConflictError("the model was saved by another version", "train it again"), 409),
        (UnavailableError("the disk is full"), 503),
        (ConfigError("ip_mode", "x", "truncate or hash"), 500),
        (NothingToTrainError(), 500),
        (EngineError("SELECT 1", RuntimeError("boom")), 500),
        (ErasureFailedError("committing", RuntimeError("boom")), 500),
    ],
)
def test_every_kind_knows_its_status_and_shares_the_root(error, status):
    assert isinstance(error, OmnithreadError) and error.http_status == status


def test_internal_signals_share_the_root_too():
    assert issubclass(MatchingSkipped, OmnithreadError)


def test_a_request_error_names_the_field_and_the_value():
    error = InvalidRequestError("surface", "nope", "one of for_you, similar")
    assert str(error) == "surface: 'nope' is not valid: expected one of for_you, similar"
    assert isinstance(error, ValueError)
