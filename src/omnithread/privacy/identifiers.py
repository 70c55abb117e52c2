"""Direct identifiers: normalise them, then keep only a keyed hash.

An email is trimmed and lower-cased, a phone put in E.164, a card or token
stripped of spacing; the result is hashed with HMAC-SHA256 under a key derived
from the installation secret. A hashed value reads ``<code>_<32 hex>``, for
example ``em_3f9a...`` for an email, and is recognised as already hashed, so
pseudonymising twice changes nothing.
"""

from __future__ import annotations

import hmac
import re
from enum import Enum

import phonenumbers

from omnithread.errors import OmnithreadError, Problem
from omnithread.events.schema import CARD_PATTERN, EMAIL_PATTERN, HASH_PATTERN, IDENTIFIER_CODES, TOKEN_PATTERN
from omnithread.privacy.secret import Secret

__all__ = [
    "IdentifierType",
    "IdentifierError",
    "Pseudonymiser",
    "normalise_email",
    "normalise_phone",
    "normalise_token",
    "is_hashed",
    "mask",
]


class IdentifierType(str, Enum):
    """Direct identifiers omnithread never stores in the clear, with their hash prefix."""

    EMAIL = "email"
    PHONE = "phone"
    LOYALTY_CARD = "loyalty_card"
    PAYMENT_TOKEN = "payment_token"
    PALM_TOKEN = "palm_token"
    APP_CODE = "app_code"

    @property
    def code(self) -> str:
        return _CODES[self]


_CODES = {IdentifierType(kind): code for kind, code in IDENTIFIER_CODES.items()}
_HASHED = re.compile(f"^{HASH_PATTERN}$")
_EMAIL = re.compile(f"^{EMAIL_PATTERN}$")
_CARD = re.compile(f"^{CARD_PATTERN}$")
_TOKEN = re.compile(f"^{TOKEN_PATTERN}$")


class IdentifierError(OmnithreadError, ValueError):
    """An identifier value cannot be normalised; carries a display-safe problem."""

    http_status = 400

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(problem.message)


def mask(value: object) -> str:
    """A rendering of a personal value safe for logs and error messages.

    >>> mask("jane.doe@example.com")
    "'j***' (20 chars)"
    """
    text = str(value)
    return f"'{text[:1]}***' ({len(text)} chars)"


def is_hashed(value: object) -> bool:
    """True when ``value`` is already a keyed hash written by omnithread."""
    return isinstance(value, str) and _HASHED.match(value) is not None


def _fail(kind: IdentifierType, field: str, value: object, why: str) -> IdentifierError:
    shown = mask(value)
    return IdentifierError(Problem("invalid_identifier", field, shown, f"{field}: {kind.value} {shown} {why}"))


def normalise_email(value: object, field: str = "email") -> str:
    """Trim and lower-case an email address.

    >>> normalise_email("  Jane.Doe@Example.COM ")
    'jane.doe@example.com'
    """
    if not isinstance(value, str):
        raise _fail(IdentifierType.EMAIL, field, value, f"must be a string, not {type(value).__name__}")
    email = value.strip().lower()
    if not _EMAIL.match(email):
        raise _fail(IdentifierType.EMAIL, field, value, "is not an email address")
    return email


def normalise_phone(value: object, field: str = "phone", region: str = "GB") -> str:
    """Put a phone number in E.164, reading national numbers in ``region``.

    >>> normalise_phone("07700 900123", region="GB")
    '+447700900123'
    """
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _fail(IdentifierType.PHONE, field, value, f"must be a string, not {type(value).__name__}")
    try:
        parsed = phonenumbers.parse(str(value), region)
    except phonenumbers.NumberParseException:
        raise _fail(IdentifierType.PHONE, field, value, "is not a phone number") from None
    if not phonenumbers.is_possible_number(parsed):
        raise _fail(IdentifierType.PHONE, field, value, "is not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_token(kind: IdentifierType, value: object, field: str) -> str:
    """Normalise a card number or opaque token.

    Loyalty card numbers lose spaces and dashes and are upper-cased; tokens are
    trimmed and must be printable ASCII without spaces.

    >>> normalise_token(IdentifierType.LOYALTY_CARD, "ab12-3456 78", "card")
    'AB12345678'
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _fail(kind, field, value, f"must be a string, not {type(value).__name__}")
    if kind is IdentifierType.LOYALTY_CARD:
        card = re.sub(r"[\s-]", "", value).upper()
        if not _CARD.match(card):
            raise _fail(kind, field, value, "must be 6 to 32 letters or digits")
        return card
    token = value.strip()
    if not _TOKEN.match(token):
        raise _fail(kind, field, value, "must be 4 to 128 printable characters without spaces")
    return token


class Pseudonymiser:
    """Turns raw identifiers into keyed hashes; one per installation secret.

    >>> p = Pseudonymiser(Secret(b"0123456789abcdef0123"))
    >>> h = p.hash(IdentifierType.EMAIL, " Jane@Example.com")
    >>> h.startswith("em_") and p.hash(IdentifierType.EMAIL, "jane@example.com") == h
    True
    >>> p.hash(IdentifierType.EMAIL, h) == h
    True
    """

    _CACHE_LIMIT = 1_000_000

    def __init__(self, secret: Secret, phone_region: str = "GB", ip_mode: str = "truncate"):
        self._key = secret.derive("omnithread identifiers v1")
        self._fingerprint_key = secret.derive("omnithread fingerprints v1")
        self.phone_region = phone_region
        self.ip_mode = ip_mode
        self._cache: dict[tuple[IdentifierType, object], str] = {}

    @property
    def hash_key(self) -> bytes:
        """The HMAC key itself, for engines that hash set-based with the same key."""
        return self._key

    def fingerprint(self, data: bytes) -> str:
        """A keyed digest of arbitrary bytes, safe to store even when they hold personal data."""
        return hmac.digest(self._fingerprint_key, data, "sha256")[:16].hex()

    def normalise(self, kind: IdentifierType, value: object, field: str | None = None) -> str:
        """The normal form of a raw identifier; raises :class:`IdentifierError`."""
        field = field or kind.value
        if kind is IdentifierType.EMAIL:
            return normalise_email(value, field)
        if kind is IdentifierType.PHONE:
            return normalise_phone(value, field, self.phone_region)
        return normalise_token(kind, value, field)

    def hash(self, kind: IdentifierType, value: object, field: str | None = None) -> str:
        """The keyed hash of ``value``; a value already hashed is returned as it is."""
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            return self._hash_uncached(kind, value, field)  # lists, dicts...: refused below, never cached
        cache_key = (kind, value)
        hashed = self._cache.get(cache_key)
        if hashed is not None:
            return hashed
        hashed = self._hash_uncached(kind, value, field)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[cache_key] = hashed
        return hashed

    def _hash_uncached(self, kind: IdentifierType, value: object, field: str | None) -> str:
        if isinstance(value, str) and is_hashed(value):
            if not value.startswith(kind.code + "_"):
                raise _fail(kind, field or kind.value, value, "is a hash of another identifier type")
            return value
        normal = self.normalise(kind, value, field)
        digest = hmac.digest(self._key, f"{kind.value}:{normal}".encode(), "sha256")
        return f"{kind.code}_{digest[:16].hex()}"
