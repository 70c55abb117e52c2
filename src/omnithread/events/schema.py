"""The event schema: Segment Spec calls, e-commerce v2 events, and our own store events.

Everything here is data: the calls and their required fields, the channels, and
one :class:`EventSchema` per named event that omnithread knows. ``docs/events.md``
is the readable form of this module and a test keeps the two in step.

Events whose names are not listed here (a sender's own ``track`` events) are
accepted as they are; a listed event must match its schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CALLS",
    "CHANNELS",
    "CHANNEL_ALIASES",
    "ENTRY_METHODS",
    "CONSENT_PURPOSES",
    "MAX_EVENT_BYTES",
    "MAX_BATCH_BYTES",
    "MAX_DEPTH",
    "MAX_COUNT",
    "MAX_MONEY",
    "MAX_SECONDS",
    "FieldSpec",
    "EventSchema",
    "EVENT_SCHEMAS",
    "COMMON_FIELDS",
    "IDENTIFIER_KEYS",
    "IDENTIFIER_CODES",
    "TOP_LEVEL_KEYS",
    "EMAIL_PATTERN",
    "CARD_PATTERN",
    "TOKEN_PATTERN",
    "HASH_PATTERN",
    "BIOMETRIC_KEYS",
    "ENTRY_TOKEN_TYPES",
]

CALLS = ("track", "identify", "page", "screen", "alias", "group")
CHANNELS = ("web", "app", "store", "voice", "server")
# Channel names Segment's own libraries write, read as ours.
CHANNEL_ALIASES = {"browser": "web", "client": "web", "mobile": "app"}
ENTRY_METHODS = ("app_code", "palm", "payment_card", "none")
CONSENT_PURPOSES = ("analytics", "personalisation", "biometric", "advertising")

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
# How deeply objects and arrays may nest in one call: deeper calls are refused (each on its own, so the
# rest of a batch is stored). Real Segment payloads nest a few levels; 32 leaves room for any of them.
MAX_DEPTH = 32

# Ranges every number of a known event must fall in, so that every stage can read it with a fixed-width
# type: a count of units, a position or a group at most a million, money at most a billion a line or an
# order, a time span at most a year. Values past them are refused at the door with the field and value.
MAX_COUNT = 1_000_000
MAX_MONEY = 1_000_000_000
MAX_SECONDS = 366 * 86_400

# Keys of traits, context.traits and properties that hold direct identifiers,
# with the identifier type they hold. Their values are stored only as keyed hashes.
IDENTIFIER_KEYS = {
    "email": "email",
    "email_address": "email",
    "emailAddress": "email",
    "phone": "phone",
    "phone_number": "phone",
    "phoneNumber": "phone",
    "mobile": "phone",
    "loyalty_card": "loyalty_card",
    "payment_token": "payment_token",
    "palm_token": "palm_token",
    "app_code": "app_code",
}
# The top-level keys of a Segment call omnithread reads (any other key is kept apart, in ``extra``).
TOP_LEVEL_KEYS = (
    "type", "messageId", "userId", "anonymousId", "event", "name", "previousId", "groupId", "properties", "traits",
    "context", "timestamp", "originalTimestamp", "sentAt", "receivedAt", "writeKey",
)  # fmt: skip

# Identifier type -> the prefix of its keyed hash (``em_3f9a...``): the one spelling of the table, which the
# pseudonymiser, the fast path's SQL and the identity graph all read.
IDENTIFIER_CODES = {
    "email": "em",
    "phone": "ph",
    "loyalty_card": "lc",
    "payment_token": "pt",
    "palm_token": "pa",
    "app_code": "ac",
}
# The normal forms' patterns (in the syntax Python and the engine's RE2 both read), the one definition the
# per-event path (privacy.identifiers) and the fast path (ingest.bulk) both follow.
EMAIL_PATTERN = r"[^@\s]+@[^@\s]+\.[^@\s.]+"  # after trimming and lower-casing
CARD_PATTERN = "[A-Z0-9]{6,32}"  # after removing spaces and dashes and upper-casing
TOKEN_PATTERN = "[!-~]{4,128}"  # printable ASCII, no spaces
HASH_PATTERN = "(" + "|".join(sorted(IDENTIFIER_CODES.values())) + ")_[0-9a-f]{32}"

# Store Entered carries its gate identity in ``entry_token``; its type follows the method.
ENTRY_TOKEN_TYPES = {"app_code": "app_code", "palm": "palm_token", "payment_card": "payment_token"}
# Raw biometric data is refused outright: only a palm reader's token may be sent.
BIOMETRIC_KEYS = frozenset(
    {"palm_template", "palm_image", "face_template", "face_image", "biometric_template", "fingerprint"}
)


@dataclass(frozen=True)
class FieldSpec:
    """One property of a named event.

    ``type`` is one of ``string``, ``number``, ``integer``, ``boolean``, ``object``,
    ``products`` (an array of product objects) or ``identifier`` (a direct
    identifier, stored as a keyed hash). ``minimum`` applies to numbers,
    ``choices`` to strings. ``required_unless`` (another field, a value) makes
    the field required, not empty, whenever that field is given with any other
    value. ``values`` is the type of every value of an ``object`` (one of
    ``VALUE_TYPES``). Both import paths read these rules from here.
    """

    type: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    description: str = ""
    required_unless: tuple[str, str] | None = None
    values: str | None = None

    def __post_init__(self) -> None:
        if self.values is not None and (self.type != "object" or self.values not in VALUE_TYPES):
            raise ValueError(f"values: {self.values!r} needs type object and one of {', '.join(VALUE_TYPES)}")


# the types an object's values may be held to (FieldSpec.values)
VALUE_TYPES = ("boolean", "number", "string")


@dataclass(frozen=True)
class EventSchema:
    """The properties of one named ``track`` event, at one version."""

    name: str
    version: int
    origin: str  # "ecommerce-v2" or "omnithread"
    description: str
    properties: dict[str, FieldSpec] = field(default_factory=dict)
    requires_store: bool = False


def _money(description: str, required: bool = False) -> FieldSpec:
    return FieldSpec("number", required=required, minimum=0, maximum=MAX_MONEY, description=description)


def _count(description: str, minimum: int = 1) -> FieldSpec:
    return FieldSpec("integer", minimum=minimum, maximum=MAX_COUNT, description=description)


_PRODUCT = {
    "product_id": FieldSpec("string", required=True, description="the product's id in the catalogue"),
    "sku": FieldSpec("string", description="stock keeping unit"),
    "category": FieldSpec("string", description="product category"),
    "name": FieldSpec("string", description="product name"),
    "brand": FieldSpec("string", description="brand"),
    "variant": FieldSpec("string", description="variant"),
    "price": _money("unit price"),
    "quantity": _count("units"),
    "currency": FieldSpec("string", description="ISO 4217 currency code"),
    "position": _count("position in a list", minimum=0),
    "coupon": FieldSpec("string", description="coupon code"),
    "url": FieldSpec("string", description="product page"),
    "image_url": FieldSpec("string", description="product image"),
}
PRODUCT_FIELDS = _PRODUCT

_CART_PRODUCT = dict(_PRODUCT, cart_id=FieldSpec("string", description="cart id"))

_ORDER = {
    "order_id": FieldSpec("string", required=True, description="order id"),
    "checkout_id": FieldSpec("string", description="checkout id"),
    "affiliation": FieldSpec("string", description="shop or till that took the order"),
    "total": _money("revenue with discounts and coupons, after tax and shipping"),
    "subtotal": _money("total before tax and shipping"),
    "revenue": _money("revenue after discounts"),
    "shipping": _money("shipping cost"),
    "tax": _money("tax"),
    "discount": _money("discount"),
    "coupon": FieldSpec("string", description="coupon code"),
    "currency": FieldSpec("string", description="ISO 4217 currency code"),
    "products": FieldSpec("products", description="the lines of the order"),
    "loyalty_card": FieldSpec("identifier", description="loyalty card shown at the till (hashed)"),
    "payment_token": FieldSpec("identifier", description="token of the payment card used (hashed)"),
    "till_id": FieldSpec("string", description="till that took a store order"),
    "visit_id": FieldSpec("string", description="checkout-free store: the trip this receipt closes"),
    "review_required": FieldSpec(
        "boolean", description="checkout-free store: a line's confidence was too low, a person checks it"
    ),
}

_STORE_ITEM = {
    "store_id": FieldSpec("string", required=True, description="the store"),
    "product_id": FieldSpec("string", required=True, description="the product"),
    "quantity": _count("units (default 1)"),
    "shelf_id": FieldSpec("string", description="shelf the product was on"),
    "plate_id": FieldSpec("string", description="weight plate that registered the change"),
    "confidence": FieldSpec("number", minimum=0, maximum=1, description="sensing confidence"),
    "visit_id": FieldSpec("string", description="the store visit this belongs to"),
}

_SCHEMAS = [
    EventSchema("Product Viewed", 2, "ecommerce-v2", "A shopper viewed a product.", dict(_PRODUCT)),
    EventSchema("Product Added", 2, "ecommerce-v2", "A product was added to a cart.", dict(_CART_PRODUCT)),
    EventSchema("Product Removed", 2, "ecommerce-v2", "A product was removed from a cart.", dict(_CART_PRODUCT)),
    EventSchema(
        "Products Searched",
        2,
        "ecommerce-v2",
        "A shopper searched the catalogue.",
        {"query": FieldSpec("string", required=True, description="the search text")},
    ),
    EventSchema(
        "Checkout Started",
        2,
        "ecommerce-v2",
        "A checkout began.",
        {k: v for k, v in _ORDER.items() if k not in {"order_id", "loyalty_card", "payment_token", "till_id"}}
        | {"order_id": FieldSpec("string", description="order id, when known")},
    ),
    EventSchema(
        "Order Completed",
        2,
        "ecommerce-v2",
        "An order was placed: online, at a till, by voice, or a checkout-free store receipt.",
        {**_ORDER, "products": FieldSpec("products", required=True, description="the lines of the order")},
    ),
    EventSchema(
        "Order Refunded",
        2,
        "ecommerce-v2",
        "An order was refunded, wholly or in part.",
        {k: _ORDER[k] for k in ("order_id", "total", "currency", "products")},
    ),
    EventSchema(
        "Store Entered",
        1,
        "omnithread",
        "A shopper passed the gate of a store.",
        {
            "store_id": FieldSpec("string", required=True, description="the store"),
            "entry_method": FieldSpec(
                "string", required=True, choices=ENTRY_METHODS, description="how the gate knew the shopper"
            ),
            "entry_token": FieldSpec(
                "identifier",
                description="app code, palm token or payment token (hashed)",
                required_unless=("entry_method", "none"),
            ),
            "gate_id": FieldSpec("string", description="the gate"),
            "group_size": _count("people entering on this identity"),
            "visit_id": FieldSpec("string", description="the store visit that starts here"),
        },
        requires_store=True,
    ),
    EventSchema(
        "Store Exited",
        1,
        "omnithread",
        "A shopper left a store.",
        {
            "store_id": FieldSpec("string", required=True, description="the store"),
            "gate_id": FieldSpec("string", description="the gate"),
            "visit_id": FieldSpec("string", description="the store visit that ends here"),
            "dwell_seconds": FieldSpec("number", minimum=0, maximum=MAX_SECONDS, description="time in the store"),
            "aisle_dwell": FieldSpec("object", description="seconds spent in each aisle, from the cameras"),
            "exit_reason": FieldSpec("string", description="set when no exit was seen and the trip was closed"),
        },
        requires_store=True,
    ),
    EventSchema(
        "Product Picked",
        1,
        "omnithread",
        "A shopper took a product from a shelf.",
        dict(_STORE_ITEM),
        requires_store=True,
    ),
    EventSchema(
        "Product Returned To Shelf",
        1,
        "omnithread",
        "A shopper put a product back.",
        dict(_STORE_ITEM, misplaced=FieldSpec("boolean", description="put back on another product's place")),
        requires_store=True,
    ),
    EventSchema(
        "Loyalty Card Linked",
        1,
        "omnithread",
        "A loyalty card was linked to the sender's identity.",
        {
            "loyalty_card": FieldSpec("identifier", required=True, description="the card number (hashed)"),
            "store_id": FieldSpec("string", description="store where it was linked, if any"),
        },
    ),
    EventSchema(
        "Consent Updated",
        1,
        "omnithread",
        "A person gave or withdrew consent for purposes.",
        {
            "purposes": FieldSpec(
                "object",
                required=True,
                description="purpose to boolean: analytics, personalisation, biometric",
                values="boolean",
            ),
            "source": FieldSpec("string", description="where consent was given: web form, app, store desk"),
        },
    ),
]

EVENT_SCHEMAS: dict[str, EventSchema] = {s.name: s for s in _SCHEMAS}

# Common fields of every call: (name, type, description).
COMMON_FIELDS = [
    ("type", "string", "the call: track, identify, page, screen, alias, group"),
    ("messageId", "string", "unique id of the message; derived from the content when absent"),
    ("userId", "string", "the sender's id of a known user"),
    ("anonymousId", "string", "device or cookie id; userId or anonymousId is required"),
    ("event", "string", "name of a track event (required for track)"),
    ("name", "string", "page or screen name"),
    ("previousId", "string", "alias: the id being merged (required for alias)"),
    ("groupId", "string", "group: the account or household (required for group)"),
    ("properties", "object", "track, page and screen properties"),
    ("traits", "object", "identify and group traits"),
    ("context", "object", "channel, store_id, consent, device, library"),
    ("context.channel", "string", "web, app, store, voice or server"),
    ("context.store_id", "string", "the store; required when the channel is store"),
    ("context.consent", "object", "consent carried with the event, stored with it"),
    ("timestamp", "ISO 8601", "when it happened; corrected for clock skew when sentAt is known"),
    ("originalTimestamp", "ISO 8601", "the device's clock when the call was made"),
    ("sentAt", "ISO 8601", "the device's clock when the call was sent"),
    ("receivedAt", "ISO 8601", "when the server received it"),
]
