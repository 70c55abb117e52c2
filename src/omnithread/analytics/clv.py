"""Customer lifetime value: BG/NBD for how many purchases a person will make, Gamma-Gamma for what each is
worth, and the two discounted into a value.

The models are the literature's, written here by maximum likelihood (numpy and scipy): BG/NBD from Fader,
Hardie and Lee, "Counting Your Customers the Easy Way" (Marketing Science, 2005), and Gamma-Gamma from
Fader, Hardie and Lee, "RFM and CLV: Using Iso-Value Curves" (Journal of Marketing Research, 2005). The
tests reproduce both papers' published fits on the CDNOW sample (``tests/data/cdnow``).

Why not a library: ``lifetimes`` fits the same likelihoods but is unmaintained (its last release is of
2020) and pulls in ``autograd`` and ``dill``; PyMC-Marketing is maintained but fits through PyMC and
PyTensor, a heavy stack for four parameters. The likelihoods are a few lines each; here they get analytic
gradients, and people with the same summary are fitted once with a weight, so a million persons fit in
seconds (``benchmarks/clv.py``).

Inputs, as the literature defines them, in one unit of time (days in omnithread): ``frequency`` is the
number of repeat purchases (purchase periods after the first), ``recency`` the time from the first purchase
to the last, ``T`` the time from the first purchase to the end of observation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import optimize, special

from omnithread.errors import InvalidRequestError, OmnithreadError

__all__ = [
    "fit_bgnbd",
    "bgnbd_log_likelihood",
    "expected_purchases",
    "probability_alive",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "expected_spend",
    "lifetime_value",
]

_BOUNDS = (-14.0, 14.0)  # log-parameters: from about 1e-6 to 1.2e6


class FitError(OmnithreadError, ValueError):
    """Data a model cannot be fitted to, or a fit whose answer cannot be used."""

    http_status = 422


def _arrays(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three summaries as float arrays, checked: a bad value is named with its field and position."""
    named = {"frequency": frequency, "recency": recency, "T": T}
    out = {}
    for name, values in named.items():
        try:
            array = np.asarray(values, dtype=float).reshape(-1)
        except (TypeError, ValueError) as error:
            raise InvalidRequestError(name, values if np.ndim(values) == 0 else "…", f"numbers ({error})") from None
        bad = ~np.isfinite(array) | (array < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidRequestError(f"{name}[{i}]", array[i], "a finite number at least 0")
        out[name] = array
    x, t_x, big_t = out["frequency"], out["recency"], out["T"]
    if not len(x) == len(t_x) == len(big_t):
        raise InvalidRequestError("frequency, recency, T", (len(x), len(t_x), len(big_t)), "arrays of one length")
    if len(x) == 0:
        raise InvalidRequestError("frequency", "[]", "at least one person")
    checks = [
        ("frequency", x, x != np.round(x), "a whole number of repeat purchases"),
        ("recency", t_x, t_x > big_t, "at most T (the last purchase falls inside the observation)"),
        ("recency", t_x, (x == 0) & (t_x != 0), "0 when frequency is 0 (no repeat purchase, no recency)"),
    ]
    for name, array, bad, rule in checks:
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidRequestError(f"{name}[{i}]", array[i], rule)
    return x, t_x, big_t


def _compressed(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of the columns and how many people share each: the likelihood is summed once per row."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return [unique[:, i] for i in range(unique.shape[1])], counts.astype(float)


def _hyp2f1(a, b, c, z) -> np.ndarray:
    """Gauss's hypergeometric function for 0 <= z < 1: scipy's, and where it gives no finite answer (very
    large parameters, as a fit to people who all shop alike produces) its series summed in logarithms."""
    a, b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, b, c, z)))
    out = np.array(special.hyp2f1(a, b, c, z), dtype=float)
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = _hyp2f1_series(a[bad], b[bad], c[bad], z[bad])
    return out


def _hyp2f1_series(a, b, c, z, terms: int = 200_000) -> np.ndarray:
    """Sum of the series (a)_k (b)_k / (c)_k z^k / k!, term by term in logarithms, until each row's terms
    fall below 1e-17 of its sum while shrinking (positive parameters, 0 <= z < 1)."""
    log_term = np.zeros_like(z)
    log_sum = np.zeros_like(z)
    active = np.ones(z.shape, dtype=bool)
    log_z = np.log(np.maximum(z, 1e-300))
    for k in range(terms):
        if not active.any():
            break
        i = np.nonzero(active)[0]
        step = np.log(a[i] + k) + np.log(b[i] + k) - np.log(c[i] + k) - np.log(k + 1.0) + log_z[i]
        log_term[i] += step
        log_sum[i] = np.logaddexp(log_sum[i], log_term[i])
        done = (log_term[i] < log_sum[i] - 39) & (step < 0) | (z[i] == 0)
        active[i[done]] = False
    return np.exp(log_sum)


# -- BG/NBD -------------------------------------------------------------------------------------------------
def _bgnbd_terms(params: np.ndarray, x, t_x, big_t, gradient: bool = False):
    """Each person's log-likelihood (and, with ``gradient``, its derivatives by r, alpha, a, b)."""
    r, alpha, a, b = params
    repeat = x > 0
    b_x1 = np.where(repeat, b + x - 1, 1.0)  # only read where x > 0
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + big_t)
    a4 = np.where(repeat, np.log(a) - np.log(b_x1) - (r + x) * np.log(alpha + t_x), -np.inf)
    tail = np.logaddexp(a3, a4)
    ll = a1 + a2 + tail
    if not gradient:
        return ll
    w4 = np.exp(a4 - tail)  # the weight of the "dropped out after the last purchase" term; 0 without repeats
    w3 = 1.0 - w4
    d_r = special.digamma(r + x) - special.digamma(r) + np.log(alpha)
    d_r += -w3 * np.log(alpha + big_t) - w4 * np.log(alpha + t_x)
    d_alpha = r / alpha - w3 * (r + x) / (alpha + big_t) - w4 * (r + x) / (alpha + t_x)
    d_a = special.digamma(a + b) - special.digamma(a + b + x) + w4 / a
    d_b = special.digamma(a + b) + special.digamma(b + x) - special.digamma(b) - special.digamma(a + b + x)
    d_b -= w4 / b_x1
    return ll, np.stack([d_r, d_alpha, d_a, d_b])


def bgnbd_log_likelihood(params: dict | Sequence[float], frequency, recency, T) -> float:
    """The BG/NBD log-likelihood of the data under ``params`` (a dict with r, alpha, a, b, or the four in
    that order), summed over people."""
    values = np.array([params[k] for k in ("r", "alpha", "a", "b")] if isinstance(params, dict) else params)
    return float(_bgnbd_terms(values, *_arrays(frequency, recency, T)).sum())


def _maximise(terms, columns, weights, start: np.ndarray, name: str) -> np.ndarray:
    """The parameters (positive) that maximise the weighted log-likelihood, searched over their logs."""
    total = weights.sum()

    def objective(theta):
        params = np.exp(theta)
        ll, grad = terms(params, *columns, gradient=True)
        # per person, so the tolerance means the same for ten people and for a million
        return -(weights @ ll) / total, -(grad @ weights) * params / total

    best = None
    for guess in (start, start + 1.0, start - 1.0):
        found = optimize.minimize(
            objective, guess, jac=True, method="L-BFGS-B", bounds=[_BOUNDS] * len(start),
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )  # fmt: skip
        if np.isfinite(found.fun) and (best is None or found.fun < best.fun):
            best = found
        if best is not None and best.success:
            break
    if best is None or not np.isfinite(best.fun):
        raise FitError(f"the {name} fit found no finite likelihood: is there any repeat purchase in the data?")
    return np.exp(best.x)


def fit_bgnbd(frequency, recency, T) -> dict[str, float]:
    """Fit BG/NBD by maximum likelihood: the dict ``{"r", "alpha", "a", "b"}``.

    ``frequency``, ``recency`` and ``T`` are equal-length arrays, one entry per person: repeat purchases,
    time of the last purchase after the first, and time from the first purchase to the end of observation.
    r and alpha shape the Gamma distribution of purchase rates (mean r/alpha per unit of time); a and b the
    Beta distribution of the chance of dropping out after each purchase (mean a/(a+b)).
    """
    x, t_x, big_t = _arrays(frequency, recency, T)
    columns, weights = _compressed(x, t_x, big_t)
    # a start near the data: the mean rate of repeat purchases for r/alpha
    rate = max(float(x.sum() / big_t.sum()), 1e-6)
    start = np.log([1.0, 1.0 / rate, 1.0, 1.0])
    r, alpha, a, b = _maximise(_bgnbd_terms, columns, weights, start, "BG/NBD")
    return {"r": float(r), "alpha": float(alpha), "a": float(a), "b": float(b)}


def probability_alive(params: dict, frequency, recency, T) -> np.ndarray:
    """P(still a customer) per person at the end of observation (Fader, Hardie and Lee 2005, eq. 11 of the
    technical note): 1 without repeat purchases, lower the longer since the last."""
    x, t_x, big_t = _arrays(frequency, recency, T)
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    repeat = x > 0
    b_x1 = np.where(repeat, b + x - 1, 1.0)
    log_ratio = np.log(a) - np.log(b_x1) + (r + x) * np.log((alpha + big_t) / (alpha + t_x))
    return np.where(repeat, 1.0 / (1.0 + np.exp(log_ratio)), 1.0)


def expected_purchases(params: dict, t: float, frequency, recency, T) -> np.ndarray:
    """Expected purchases per person in the next ``t`` units of time, given their history (eq. 10 of Fader,
    Hardie and Lee 2005)."""
    if not np.isfinite(t) or t < 0:
        raise InvalidRequestError("t", t, "a horizon of at least 0")
    x, t_x, big_t = _arrays(frequency, recency, T)
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    if abs(a - 1.0) < 1e-9:
        a = 1.0 + 1e-9  # the closed form divides by a - 1; its limit is continuous
    repeat = x > 0
    hyper = _hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + big_t + t))
    first = (a + b + x - 1) / (a - 1)
    second = 1.0 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyper
    b_x1 = np.where(repeat, b + x - 1, 1.0)
    alive = np.where(repeat, (a / b_x1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x), 0.0)
    return np.maximum(first * second / (1.0 + alive), 0.0)


# -- Gamma-Gamma --------------------------------------------------------------------------------------------
def _gamma_gamma_terms(params: np.ndarray, x, m, gradient: bool = False):
    p, q, v = params
    px = p * x
    ll = (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(v)
        + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(v + m * x)
    )  # fmt: skip
    if not gradient:
        return ll
    d_p = x * (special.digamma(px + q) - special.digamma(px) + np.log(m) + np.log(x) - np.log(v + m * x))
    d_q = special.digamma(px + q) - special.digamma(q) + np.log(v) - np.log(v + m * x)
    d_v = q / v - (px + q) / (v + m * x)
    return ll, np.stack([d_p, d_q, d_v])


def _spend_arrays(frequency, monetary) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(frequency, dtype=float).reshape(-1)
    m = np.asarray(monetary, dtype=float).reshape(-1)
    if len(x) != len(m):
        raise InvalidRequestError("frequency, monetary", (len(x), len(m)), "arrays of one length")
    for name, array in (("frequency", x), ("monetary", m)):
        bad = ~np.isfinite(array) | (array < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidRequestError(f"{name}[{i}]", array[i], "a finite number at least 0")
    return x, m


def gamma_gamma_log_likelihood(params: dict | Sequence[float], frequency, monetary) -> float:
    """The Gamma-Gamma log-likelihood of the repeat buyers (frequency > 0, monetary > 0) under ``params``."""
    values = np.array([params[k] for k in ("p", "q", "v")] if isinstance(params, dict) else params)
    x, m = _spend_arrays(frequency, monetary)
    keep = (x > 0) & (m > 0)
    return float(_gamma_gamma_terms(values, x[keep], m[keep]).sum())


def fit_gamma_gamma(frequency, monetary) -> dict[str, float]:
    """Fit Gamma-Gamma on repeat buyers: the dict ``{"p", "q", "v"}`` (v is the literature's gamma).

    ``monetary`` is each person's mean value of their repeat purchases; people without a repeat purchase
    (or with a mean of 0) carry no information on spend and are left out, as the model defines. The model
    assumes spend independent of frequency: check it on your data (their correlation should be small).
    """
    x, m = _spend_arrays(frequency, monetary)
    keep = (x > 0) & (m > 0)
    if keep.sum() < 3:
        raise FitError(f"Gamma-Gamma needs repeat buyers with a spend; {int(keep.sum())} found")
    columns, weights = _compressed(x[keep], m[keep])
    mean = float(m[keep].mean())
    start = np.log([1.0, 2.0, mean])
    p, q, v = _maximise(_gamma_gamma_terms, columns, weights, start, "Gamma-Gamma")
    return {"p": float(p), "q": float(q), "v": float(v)}


def expected_spend(params: dict, frequency, monetary) -> np.ndarray:
    """Expected value of a person's future purchase: their own mean shrunk towards the population's, more
    so the fewer purchases it rests on; the population's mean (p v / (q - 1)) without a repeat purchase."""
    x, m = _spend_arrays(frequency, monetary)
    p, q, v = params["p"], params["q"], params["v"]
    if q <= 1:
        raise FitError(f"q = {q:.3g}: the mean spend is infinite under this fit (q must exceed 1)")
    return (p * (v + m * x)) / (p * x + q - 1)


def lifetime_value(
    bgnbd: dict,
    gamma_gamma: dict,
    frequency,
    recency,
    T,
    monetary,
    *,
    horizon: float = 365.0,
    period: float = 30.0,
    annual_discount: float = 0.10,
    unit_days: float = 1.0,
) -> np.ndarray:
    """Discounted value of each person's purchases over ``horizon`` (in the data's unit): expected purchases
    period by period, each period's at the expected spend, discounted at ``annual_discount`` a year to the
    end of its period (``unit_days`` says how many days one unit of the data is)."""
    if horizon <= 0 or period <= 0:
        field, given = ("horizon", horizon) if horizon <= 0 else ("period", period)
        raise InvalidRequestError(field, given, "more than 0")
    spend = expected_spend(gamma_gamma, frequency, monetary)
    ends = np.append(np.arange(period, horizon, period), horizon)
    value = np.zeros_like(spend)
    before = np.zeros_like(spend)
    for end in ends:
        upto = expected_purchases(bgnbd, float(end), frequency, recency, T)
        years = end * unit_days / 365.0
        value += (upto - before) * spend / (1.0 + annual_discount) ** years
        before = upto
    return value
