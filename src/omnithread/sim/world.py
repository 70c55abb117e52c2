"""The simulated retailer's world: catalogue, stores, people and their identifiers.

Built with NumPy from one seeded generator, so the same config gives the same
world. Tastes are latent vectors over products plus a preference over
categories; a person's tastes are the same on every channel, while each channel
has its own category mix (groceries mostly in store, electronics mostly online).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnithread.sim.config import WorldConfig

__all__ = ["World", "build_world", "CATEGORIES", "CHANNEL_MIX"]

# category: (online weight, store weight, median price, median unit weight in grams)
CATEGORIES = {
    "produce": (0.3, 2.0, 1.2, 400),
    "dairy": (0.3, 1.8, 1.5, 600),
    "bakery": (0.2, 1.5, 1.8, 500),
    "pantry": (0.6, 1.5, 2.5, 450),
    "snacks": (0.6, 1.3, 1.6, 180),
    "beverages": (0.5, 1.4, 2.0, 900),
    "frozen": (0.2, 1.0, 3.5, 700),
    "household": (0.8, 0.9, 4.0, 800),
    "beauty": (1.2, 0.6, 8.0, 250),
    "baby": (1.0, 0.5, 9.0, 900),
    "pet": (1.0, 0.6, 7.0, 1500),
    "electronics": (2.0, 0.2, 45.0, 600),
    "books": (1.6, 0.3, 12.0, 450),
    "toys": (1.4, 0.3, 18.0, 700),
    "clothing": (1.6, 0.3, 25.0, 350),
    "home": (1.3, 0.3, 22.0, 1500),
}
CATEGORY_NAMES = list(CATEGORIES)
_MIX = np.array([[v[0] for v in CATEGORIES.values()], [v[1] for v in CATEGORIES.values()]])
# rows: web, app, store, voice (voice orders are groceries and household re-orders)
CHANNEL_MIX = np.vstack([_MIX[0], _MIX[0], _MIX[1], _MIX[1] * np.array([1] * 8 + [0.3] * 8)])
CHANNEL_ROW = {"web": 0, "app": 1, "store": 2, "voice": 3}

FIRST_NAMES = (
    "olivia amelia isla ava mia ivy lily isabella rosie sophia grace freya evie poppy ella charlotte "
    "noah oliver george leo arthur muhammad harry oscar archie henry jack theo charlie jacob freddie alfie "
    "thomas william james daniel samuel joseph david emma sarah laura hannah rachel anna lucy kate"
).split()
LAST_NAMES = (
    "smith jones taylor brown williams wilson johnson davies patel robinson wright thompson evans walker "
    "white roberts green hall thomas clarke jackson wood harris edwards turner martin cooper hill ward "
    "hughes moore clark king harrison lewis baker lee allen morris khan scott watson davis young"
).split()
STREETS = (
    "high street|station road|church lane|park avenue|victoria road|green lane|manor road|mill lane|"
    "kings road|queens road|school lane|the crescent|north street|london road|york road|albert street"
).split("|")
TOWNS = "leeds york bath derby bristol oxford norwich exeter chester durham".split()
DOMAINS = "example.com example.org mail.example.net post.example.co.uk".split()


@dataclass
class World:
    """Arrays describing the world; index i of a person array is person i."""

    config: WorldConfig
    # catalogue
    product_ids: np.ndarray
    product_category: np.ndarray
    product_price: np.ndarray
    product_weight: np.ndarray
    product_pop: np.ndarray
    product_vec: np.ndarray
    # stores
    store_ids: np.ndarray
    store_checkout_free: np.ndarray
    # people
    person_ids: np.ndarray
    habit: np.ndarray  # 0 online only, 1 store only, 2 both
    member: np.ndarray
    household: np.ndarray
    home_store: np.ndarray
    taste: np.ndarray
    category_pref: np.ndarray
    # identifiers (raw; the truth keeps them, sources send them)
    account: np.ndarray  # "" for people without an account
    emails: np.ndarray  # (people, 2); second may be ""
    phone: np.ndarray
    devices: np.ndarray  # (people, 3) anonymous ids; "" where unused
    device_kind: np.ndarray  # (people, 3) 0 web, 1 app
    voice_device: np.ndarray
    loyalty_card: np.ndarray
    cards: np.ndarray  # (people, 2) payment tokens
    palm: np.ndarray
    app_code: np.ndarray
    first_name: np.ndarray
    last_name: np.ndarray
    street: np.ndarray
    town: np.ndarray
    postcode: np.ndarray
    birth_date: np.ndarray

    @property
    def online(self) -> np.ndarray:
        return self.habit != 1

    @property
    def in_store(self) -> np.ndarray:
        return self.habit != 0


def _hex(rng: np.random.Generator, n: int, chars: int) -> np.ndarray:
    raw = rng.integers(0, 16, size=(n, chars), dtype=np.int8)
    alphabet = np.array(list("0123456789abcdef"))
    return np.array(["".join(row) for row in alphabet[raw]]) if n else np.array([], dtype=str)


def _digits(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    return np.array([f"{v:0{count}d}" for v in rng.integers(0, 10**count, size=n, dtype=np.int64)])


def _catalogue(cfg: WorldConfig, rng: np.random.Generator, dim: int):
    n = cfg.products
    cat = rng.integers(0, len(CATEGORIES), size=n)
    cat[: len(CATEGORIES)] = np.arange(min(n, len(CATEGORIES)))
    medians = np.array([v[2] for v in CATEGORIES.values()])[cat]
    weights = np.array([v[3] for v in CATEGORIES.values()])[cat]
    price = np.round(medians * rng.lognormal(0, 0.5, n), 2).clip(0.2)
    weight = np.round(weights * rng.lognormal(0, 0.4, n)).clip(20)
    pop = rng.zipf(1.6, n).clip(1, 200).astype(float)
    vec = rng.normal(0, 1, (n, dim))
    ids = np.array([f"P{i:05d}" for i in range(n)])
    return ids, cat, price, weight, np.log(pop), vec


def build_world(cfg: WorldConfig) -> World:
    """The world for ``cfg``: deterministic for its seed."""
    rng = np.random.default_rng(cfg.seed)
    dim = 8
    product_ids, category, price, weight, pop, vec = _catalogue(cfg, rng, dim)
    n_stores = cfg.till_stores + cfg.checkout_free_stores
    store_ids = np.array([f"S{i + 1:02d}" for i in range(n_stores)])
    checkout_free = np.arange(n_stores) >= cfg.till_stores

    n = cfg.people
    habit = rng.choice(3, size=n, p=[cfg.online_only, cfg.store_only, 1 - cfg.online_only - cfg.store_only])
    member = rng.random(n) < cfg.member_share
    household = np.zeros(n, dtype=np.int64)
    sizes = rng.choice([1, 2, 3, 4], size=n, p=[0.45, 0.3, 0.15, 0.1])
    cuts = np.cumsum(sizes)
    household = np.searchsorted(cuts, np.arange(n), side="right")
    home_store = rng.integers(0, n_stores, size=n)
    # members of a household share a home store and part of their tastes
    first_of = np.r_[0, cuts[:-1]][household]
    home_store = home_store[first_of]
    taste = rng.normal(0, 0.8, (n, dim))
    taste = 0.6 * taste + 0.4 * taste[first_of]
    category_pref = rng.dirichlet(np.full(len(CATEGORIES), 0.6), size=n)

    online = habit != 1
    in_store = habit != 0
    account = np.where(online, np.char.add("acct-", _hex(rng, n, 10)), "")
    first = np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), n)]
    last = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)]
    last = np.where(rng.random(n) < 0.5, last[first_of], last)  # families share surnames
    domain = np.array(DOMAINS)[rng.integers(0, len(DOMAINS), (n, 2))]
    number = np.arange(cfg.first_person, cfg.first_person + n)
    handle1 = np.char.add(np.char.add(np.char.add(first, "."), last), np.char.mod("%d", number))
    handle2 = np.char.add(np.char.add(first, np.char.mod("%d", rng.integers(10, 99, n))), np.char.mod("x%d", number))
    emails = np.stack(
        [
            np.char.add(np.char.add(handle1, "@"), domain[:, 0]),
            np.where(rng.random(n) < 0.4, np.char.add(np.char.add(handle2, "@"), domain[:, 1]), ""),
        ],
        axis=1,
    )
    emails[~online] = ""
    phone = np.char.add("+447", _digits(rng, n, 9))
    n_dev = np.where(online, rng.integers(1, 4, n), 0)
    devices = np.char.add("anon-", _hex(rng, n * 3, 16)).reshape(n, 3)
    devices[np.arange(3)[None, :] >= n_dev[:, None]] = ""
    device_kind = rng.integers(0, 2, (n, 3))
    # a shared household tablet: the household head's first device, used by everyone in it
    shares_device = (rng.random(n) < cfg.shared_device_share) & online & online[first_of] & (first_of != np.arange(n))
    # the shared tablet takes the first free slot, so used slots stay contiguous
    sharer = np.nonzero(shares_device)[0]
    shared_slot = np.minimum(n_dev[sharer], 2)
    devices[sharer, shared_slot] = devices[first_of[sharer], 0]
    device_kind[sharer, shared_slot] = device_kind[first_of[sharer], 0]
    voice_device = np.where(online & (rng.random(n) < cfg.voice_share), np.char.add("voice-", _hex(rng, n, 12)), "")
    loyalty = np.where(in_store & (rng.random(n) < cfg.loyalty_card_share), np.char.add("LC", _digits(rng, n, 10)), "")
    cards = np.char.add("tok_", _hex(rng, n * 2, 16)).reshape(n, 2)
    cards[rng.random(n) < 0.5, 1] = ""
    shares_card = (rng.random(n) < cfg.shared_card_share) & (first_of != np.arange(n))
    cards[shares_card, 1] = cards[first_of[shares_card], 0]
    palm = np.where(in_store & (rng.random(n) < cfg.palm_share), np.char.add("palm_", _hex(rng, n, 20)), "")
    app_code = np.where(online & in_store, np.char.add("qr_", _hex(rng, n, 12)), "")
    street = np.char.add(
        np.char.mod("%d ", rng.integers(1, 200, n)), np.array(STREETS)[rng.integers(0, len(STREETS), n)]
    )
    street = np.where(first_of != np.arange(n), street[first_of], street)
    town = np.array(TOWNS)[rng.integers(0, len(TOWNS), n)][first_of]
    letters = np.array(list("ABCDEFGHJKLMNPRSTUWY"))
    postcode = np.array(
        [
            f"{a}{b}{d1} {d2}{c}{e}"
            for a, b, c, e, d1, d2 in zip(
                letters[rng.integers(0, 20, n)],
                letters[rng.integers(0, 20, n)],
                letters[rng.integers(0, 20, n)],
                letters[rng.integers(0, 20, n)],
                rng.integers(1, 20, n),
                rng.integers(1, 10, n),
            )
        ]
    )[first_of]
    birth = (np.datetime64("1950-01-01") + rng.integers(0, 365 * 55, n).astype("timedelta64[D]")).astype(str)
    return World(
        cfg,
        product_ids,
        category,
        price,
        weight,
        pop,
        vec,
        store_ids,
        checkout_free,
        np.array([f"person-{i:07d}" for i in number]),
        habit,
        member,
        household,
        home_store,
        taste,
        category_pref,
        account,
        emails,
        phone,
        devices,
        device_kind,
        voice_device,
        loyalty,
        cards,
        palm,
        app_code,
        first,
        last,
        street,
        town,
        postcode,
        birth,
    )
