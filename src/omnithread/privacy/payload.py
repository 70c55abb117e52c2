"""Pseudonymise a parsed payload, in place.

The identifier fields identity resolution reads (``email``, ``phone``, ``loyalty_card``... in ``traits``,
``context.traits``, ``context`` and ``properties``, and a Store Entered ``entry_token``) are replaced by their
keyed hashes; a value there that cannot be normalised is encrypted in place and reported, so the event is
refused and can be kept and replayed without the raw value ever being written. Then the personal-data rule
(:mod:`omnithread.privacy.detect`) takes everything else: identifier keys at any depth under any spelling,
emails and phone numbers inside any string, ids that are emails or phones, IP addresses. Raw biometric data
is removed at any depth and reported.
"""

from __future__ import annotations

from typing import Any

from omnithread.errors import Problem
from omnithread.events.schema import ENTRY_TOKEN_TYPES, IDENTIFIER_KEYS
from omnithread.privacy.crypto import PayloadCipher
from omnithread.privacy.detect import REMOVED, PersonalData
from omnithread.privacy.identifiers import IdentifierError, IdentifierType, Pseudonymiser

__all__ = ["pseudonymise_payload", "personal_data_rule", "reveal_encrypted_values", "REMOVED"]

_TYPES = {key: IdentifierType(kind) for key, kind in IDENTIFIER_KEYS.items()}


def _hash_in_place(
    holder: dict,
    key: str,
    kind: IdentifierType,
    field: str,
    pseudonymiser: Pseudonymiser,
    cipher: PayloadCipher,
    problems: list[Problem],
) -> None:
    value = holder[key]
    if value is None or value == "" or PayloadCipher.is_encrypted(value):
        if PayloadCipher.is_encrypted(value):
            problems.append(
                Problem("invalid_identifier", field, "<encrypted>", f"{field}: still not a valid {kind.value}")
            )
        return
    try:
        holder[key] = pseudonymiser.hash(kind, value, field)
    except IdentifierError as error:
        holder[key] = cipher.encrypt_value(value)
        problems.append(error.problem)


def _scan(section: dict, prefix: str, pseudonymiser, cipher, problems: list[Problem]) -> None:
    # Most sections hold no identifier at all; a set intersection skips them cheaply.
    if _TYPES.keys().isdisjoint(section):
        return
    for key in list(section):
        if key in _TYPES:
            _hash_in_place(section, key, _TYPES[key], f"{prefix}.{key}", pseudonymiser, cipher, problems)


def personal_data_rule(pseudonymiser: Pseudonymiser, cipher: PayloadCipher) -> PersonalData:
    """The personal-data rule for this installation (one per pseudonymiser and cipher, cached on it)."""
    rule = getattr(pseudonymiser, "_personal_data", None)
    if rule is None or rule.cipher is not cipher:
        rule = PersonalData(pseudonymiser, cipher, getattr(pseudonymiser, "ip_mode", "truncate"))
        pseudonymiser._personal_data = rule  # type: ignore[attr-defined]  # (cached on the key it serves)
    return rule


def pseudonymise_payload(payload: dict, pseudonymiser: Pseudonymiser, cipher: PayloadCipher) -> list[Problem]:
    """Replace every direct identifier in ``payload`` by its keyed hash; return problems.

    >>> from omnithread.privacy import Secret
    >>> s = Secret(b"0123456789abcdef0123")
    >>> event = {"userId": "Jane@Example.com", "traits": {"email": "jane@example.com"}}
    >>> pseudonymise_payload(event, Pseudonymiser(s), PayloadCipher(s))
    []
    >>> event["userId"] == event["traits"]["email"] and event["userId"].startswith("em_")
    True
    """
    problems: list[Problem] = []
    for key in ("userId", "anonymousId", "previousId", "groupId"):
        value = payload.get(key)
        if isinstance(value, str) and "@" in value and personal_data_rule(pseudonymiser, cipher).text(value) == value:
            # an id with an '@' that holds no email the rule finds: refused as an email that is not one
            _hash_in_place(payload, key, IdentifierType.EMAIL, key, pseudonymiser, cipher, problems)
    for key in ("traits", "properties"):
        section = payload.get(key)
        if isinstance(section, dict):
            _scan(section, key, pseudonymiser, cipher, problems)
    context = payload.get("context")
    if isinstance(context, dict):
        _scan(context, "context", pseudonymiser, cipher, problems)
        if isinstance(context.get("traits"), dict):
            _scan(context["traits"], "context.traits", pseudonymiser, cipher, problems)
    properties = payload.get("properties")
    if payload.get("event") == "Store Entered" and isinstance(properties, dict) and properties.get("entry_token"):
        method = properties.get("entry_method")
        kind = ENTRY_TOKEN_TYPES.get(method) if isinstance(method, str) else None
        if kind is None:
            # No method to type the token by: keep it only encrypted, never in the clear.
            if not PayloadCipher.is_encrypted(properties["entry_token"]):
                properties["entry_token"] = cipher.encrypt_value(properties["entry_token"])
        else:
            _hash_in_place(
                properties,
                "entry_token",
                IdentifierType(kind),
                "properties.entry_token",
                pseudonymiser,
                cipher,
                problems,
            )
    # and personal data wherever else it is, raw biometric data too (privacy.detect)
    personal_data_rule(pseudonymiser, cipher).payload(payload, problems)
    return problems


def reveal_encrypted_values(value: Any, cipher: PayloadCipher) -> Any:
    """Decrypt every ``enc1:`` value inside a payload (in memory, for a replay)."""
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = reveal_encrypted_values(item, cipher)
        return value
    if isinstance(value, list):
        return [reveal_encrypted_values(item, cipher) for item in value]
    if PayloadCipher.is_encrypted(value):
        return cipher.decrypt_value(value)
    return value
