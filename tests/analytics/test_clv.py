"""Lifetime value's models against the literature: the published fits on the CDNOW sample, parameters
recovered from data drawn from the models themselves, and the closed forms against simulation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from omnithread.analytics import clv
from omnithread.errors import InvalidRequestError

CDNOW = Path(__file__).parents[1] / "data" / "cdnow" / "cdnow_customers_summary_with_transactions.csv"


@pytest.fixture(scope="module")
def cdnow():
    with CDNOW.open() as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("x", "t_x", "T", "zbar")}


def test_bgnbd_reproduces_the_published_fit_on_cdnow(cdnow):
    """Fader, Hardie and Lee (2005), "Counting Your Customers the Easy Way", table 1: r = 0.243,
    alpha = 4.414, a = 0.793, b = 2.426, log-likelihood -9582.4, on 2,357 customers in weeks."""
    fit = clv.fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert set(fit) == {"r", "alpha", "a", "b"}
    assert [round(fit[k], 3) for k in ("r", "alpha", "a", "b")] == [0.243, 4.414, 0.793, 2.426]
    assert round(clv.bgnbd_log_likelihood(fit, cdnow["x"], cdnow["t_x"], cdnow["T"]), 1) == -9582.4
    # plain lists do as well as arrays
    again = clv.fit_bgnbd(list(cdnow["x"]), list(cdnow["t_x"]), list(cdnow["T"]))
    assert again == pytest.approx(fit, rel=1e-6)


def test_gamma_gamma_reproduces_the_published_fit_on_cdnow(cdnow):
    """Fader, Hardie and Lee (2005), "RFM and CLV: Using Iso-Value Curves", and Fader and Hardie (2013), "The
    Gamma-Gamma Model of Monetary Value": p = 6.25, q = 3.74, gamma = 15.44 on the 946 repeat buyers."""
    fit = clv.fit_gamma_gamma(cdnow["x"], cdnow["zbar"])
    assert fit["p"] == pytest.approx(6.25, abs=0.006)
    assert fit["q"] == pytest.approx(3.74, abs=0.006)
    assert fit["v"] == pytest.approx(15.44, abs=0.01)
    # the population's mean spend, p v / (q - 1), for someone without a repeat purchase
    assert clv.expected_spend(fit, [0], [0])[0] == pytest.approx(fit["p"] * fit["v"] / (fit["q"] - 1))
    # shrinkage: a person's expected spend lies between their own mean and the population's
    own = clv.expected_spend(fit, [1, 10], [100.0, 100.0])
    assert 100 > own[1] > own[0] > fit["p"] * fit["v"] / (fit["q"] - 1)


def test_the_conditional_expectation_and_p_alive_of_the_published_example(cdnow):
    """The papers' customer with 2 repeat purchases, the last at week 30.43 of 38.86: 1.226 purchases
    expected in the next 39 weeks under the published parameters."""
    fit = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert clv.expected_purchases(fit, 39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=0.001)
    alive = clv.probability_alive(fit, [0, 2, 2], [0, 30.43, 5.0], [38.86, 38.86, 38.86])
    assert alive[0] == 1.0 and 1 > alive[1] > alive[2] > 0  # the longer since the last purchase, the less alive
    # with no time ahead, nothing is expected
    assert clv.expected_purchases(fit, 0, [2], [30.43], [38.86])[0] == pytest.approx(0, abs=1e-12)


def _draw_bgnbd(params, people, T, rng):
    """People drawn from the BG/NBD process itself: rate ~ Gamma(r, alpha), drop-out chance ~ Beta(a, b) after
    each purchase; observed from their first purchase for T."""
    lam = rng.gamma(params["r"], 1 / params["alpha"], people)
    p = rng.beta(params["a"], params["b"], people)
    x, t_x = np.zeros(people), np.zeros(people)
    for i in range(people):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    return x, t_x


def test_bgnbd_recovers_the_parameters_of_data_drawn_from_it():
    rng = np.random.default_rng(3)
    truth = {"r": 0.8, "alpha": 20.0, "a": 1.5, "b": 6.0}
    T = rng.uniform(100, 365, 12_000)
    x, t_x = _draw_bgnbd(truth, len(T), T, rng)
    fit = clv.fit_bgnbd(x, t_x, T)
    for k in truth:
        assert fit[k] == pytest.approx(truth[k], rel=0.25), k
    # the fit is the maximum: the truth and nearby points are no more likely
    best = clv.bgnbd_log_likelihood(fit, x, t_x, T)
    assert best >= clv.bgnbd_log_likelihood(truth, x, t_x, T)
    for k in fit:
        assert best >= clv.bgnbd_log_likelihood(dict(fit, **{k: fit[k] * 1.05}), x, t_x, T)


def test_expected_purchases_agree_with_simulating_the_future():
    """For people drawn from the model and observed for a while, the closed form's expected purchases in the
    next t match what those same people go on to do (simulated with their own hidden rate and drop-out)."""
    rng = np.random.default_rng(11)
    params = {"r": 1.2, "alpha": 30.0, "a": 0.9, "b": 4.0}
    people, T_obs, ahead = 40_000, 120.0, 90.0
    lam = rng.gamma(params["r"], 1 / params["alpha"], people)
    p = rng.beta(params["a"], params["b"], people)
    x, t_x, future = np.zeros(people), np.zeros(people), np.zeros(people)
    for i in range(people):
        t, alive = 0.0, True
        while alive:
            t += rng.exponential(1 / lam[i])
            if t > T_obs + ahead:
                break
            if t <= T_obs:
                x[i] += 1
                t_x[i] = t
            else:
                future[i] += 1
            alive = rng.random() >= p[i]
    predicted = clv.expected_purchases(params, ahead, x, t_x, np.full(people, T_obs))
    assert predicted.sum() == pytest.approx(future.sum(), rel=0.05)
    for low, high in ((0, 1), (1, 3), (3, 1000)):  # and within groups by history
        group = (x >= low) & (x < high)
        assert predicted[group].mean() == pytest.approx(future[group].mean(), rel=0.12), (low, high)


def test_lifetime_value_discounts_and_grows_with_the_horizon(cdnow):
    bg = clv.fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    gg = clv.fit_gamma_gamma(cdnow["x"], cdnow["zbar"])
    args = (cdnow["x"][:50], cdnow["t_x"][:50], cdnow["T"][:50], cdnow["zbar"][:50])
    year = clv.lifetime_value(bg, gg, *args, horizon=52, period=4, annual_discount=0.0, unit_days=7)
    undiscounted = clv.expected_purchases(bg, 52, *args[:3]) * clv.expected_spend(gg, args[0], args[3])
    assert year == pytest.approx(undiscounted)  # no discount: purchases times spend
    discounted = clv.lifetime_value(bg, gg, *args, horizon=52, period=4, annual_discount=0.2, unit_days=7)
    assert (discounted < year).all() and (discounted > year / 1.2).all()
    assert (clv.lifetime_value(bg, gg, *args, horizon=104, period=4, unit_days=7) > discounted).all()


@pytest.mark.parametrize(
    "frequency, recency, T, field",
    [
        ([1, -1], [1, 0], [2, 2], "frequency[1]"),
        ([1.5], [1], [2], "frequency[0]"),
        ([1], [3], [2], "recency[0]"),
        ([0], [1], [2], "recency[0]"),
        ([0], [0], [-1], "T[0]"),
        ([1, 2], [1], [2, 2], "frequency, recency, T"),
        ([1], [float("nan")], [2], "recency[0]"),
    ],
)
def test_bad_summaries_are_refused_naming_the_field_and_value(frequency, recency, T, field):
    with pytest.raises(InvalidRequestError) as caught:
        clv.fit_bgnbd(frequency, recency, T)
    assert caught.value.field == field and field in str(caught.value)


def test_no_repeat_purchase_at_all_is_a_clear_failure():
    with pytest.raises(clv.FitError, match="Gamma-Gamma needs repeat buyers"):
        clv.fit_gamma_gamma([0, 0, 0], [0, 0, 0])


def test_the_expectation_stays_finite_for_people_who_all_shop_alike():
    """A fit to people with one rate (no spread) has huge r and alpha, where scipy's hypergeometric function
    gives no answer; its series, summed in logarithms, does, and agrees with scipy where both answer."""
    fit = {"r": 90768.1, "alpha": 995804.9, "a": 0.000754, "b": 351.7}
    got = clv.expected_purchases(fit, 14, [0, 1, 2], [0, 5, 9], [10, 10, 10])
    assert np.isfinite(got).all() and (got > 0).all()
    rate = fit["r"] / fit["alpha"]  # nobody drops out to speak of: about rate x 14 days each
    assert got == pytest.approx(rate * 14, rel=0.02)
    a, b, c, z = np.array([0.5, 3, 20.0]), np.array([2.4, 5, 30]), np.array([3.0, 7, 40]), np.array([0.3, 0.6, 0.9])
    from scipy import special

    assert clv._hyp2f1_series(a, b, c, z) == pytest.approx(special.hyp2f1(a, b, c, z), rel=1e-10)
