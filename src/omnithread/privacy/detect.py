"""Personal data wherever it arrives: one rule, written once, that every door follows.

A fixed list of field names misses what clients really send (``traits.Email``, ``properties.customer.phone``,
an email in a page URL's query string, a phone number as ``userId``). So the rule looks at keys *and* values,
at any depth, in every section of a call, in rejected payloads and in reference rows:

1. **Keys that name an identifier.** A key is split into words (``contactEmail``, ``contact_email`` and
   ``Contact-Email`` are all *contact email*); when its last words spell an identifier type (see
   :data:`KEY_WORDS`: *email*, *phone number*, *mobile*, *loyalty card*, *payment token*...), its value is
   normalised and replaced by that type's keyed hash, and a value that is not a valid identifier of the type
   is encrypted in place. When they spell an IP address (*ip*, *ip address*, *x forwarded for*), the address
   is truncated (IPv4 to its /24, IPv6 to its /48) or replaced by a keyed hash, as the ``ip_mode`` setting
   says.
2. **Values that hold an identifier.** In every other string (and every key), email addresses and phone
   numbers are found and replaced in place by their keyed hashes: ``"write to Jane@Example.org"`` becomes
   ``"write to em_3f9a…"``. A phone number is a run of 7 to 17 digits in the usual groupings that starts
   like one (``+44``, ``0044``, ``(020)``, ``07700``) and that the phone library accepts as a valid number
   for the region setting. Percent-encoded text (URLs, query strings, form bodies) is decoded first; a
   value in which an identifier was found is kept decoded, with the identifier replaced.
3. **Ids.** A ``userId``, ``anonymousId``, ``previousId`` or ``groupId`` that *is* an email or a phone number
   becomes that identifier's hash, so it joins the same person as the trait would; one that holds an
   identifier is rewritten as in 2.

Keyed hashes and encrypted values are left as they are, so applying the rule twice changes nothing.

The fast import path runs in the engine. It does not repeat this rule: it runs :data:`SCREEN`, a regular
expression (in the syntax both Python and the engine's RE2 read) that matches the JSON text of every value
the rule could change, and hands what it matches to :func:`scrub_json_text`, this module's rule. A property
test holds the screen to that promise, so the rule has one definition.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

import orjson
import phonenumbers

from omnithread.errors import ConfigError, Problem
from omnithread.events.schema import BIOMETRIC_KEYS, IDENTIFIER_CODES, IDENTIFIER_KEYS
from omnithread.privacy.crypto import PayloadCipher
from omnithread.privacy.identifiers import IdentifierError, IdentifierType, Pseudonymiser, is_hashed

__all__ = [
    "KEY_WORDS",
    "KEY_HINTS",
    "IPV4",
    "IP_MODES",
    "SCREEN",
    "HASHED_PAIRS",
    "screen_sql",
    "REMOVED",
    "PersonalData",
    "key_family",
    "screen_hits",
]

REMOVED = "[removed: biometric data is never stored]"
IP_MODES = ("truncate", "hash")
ID_FIELDS = ("userId", "anonymousId", "previousId", "groupId")

# A key's last words and what its value is. A key may run a spelling's words together ("emailAddress",
# "emailaddress") but not split one of them ("Ph_one" is not a phone).
KEY_WORDS: dict[str, str] = {
    **dict.fromkeys(("email", "email address", "email addr", "mail", "mail address"), "email"),
    **dict.fromkeys(
        (
            "phone",
            "phone number",
            "phone no",
            "mobile",
            "mobile number",
            "mobile no",
            "mobile phone",
            "telephone",
            "telephone number",
            "tel",
            "cell",
            "cell phone",
            "cell number",
            "msisdn",
        ),
        "phone",
    ),
    **dict.fromkeys(("loyalty card", "loyalty card number", "loyalty number", "loyalty id"), "loyalty_card"),
    "payment token": "payment_token",
    "palm token": "palm_token",
    "app code": "app_code",
    **dict.fromkeys(("ip", "ip address", "ip addr", "forwarded for", "x forwarded for", "real ip"), "ip"),
}
# each spelling run together, with the places its words meet
_SPELLINGS: dict[str, tuple[str, frozenset[int]]] = {
    spelling.replace(" ", ""): (
        family,
        frozenset(sum(len(w) for w in spelling.split()[:i]) for i in range(1, len(spelling.split()))),
    )
    for spelling, family in KEY_WORDS.items()
}
_LONGEST = max(len(spelling.split()) for spelling in KEY_WORDS)  # words a key's ending is read over
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# -- patterns (each in the common subset of Python's and RE2's syntax) --------------------------------------
_NOT_WORD = "[^0-9A-Za-z_+]"
_PHONE_HEAD = r"(?:\+ ?\(?[1-9]|\(0?[1-9]|00[1-9]|0[1-9])"
_PHONE_GROUPS = r"(?:[ ().\-/]{0,3}[0-9])"
_PHONE = re.compile(rf"(?<![0-9A-Za-z_+]){_PHONE_HEAD}{_PHONE_GROUPS}{{5,14}}(?![0-9A-Za-z_])")
_EMAIL_CHARS = r"[^\s@<>()\[\],;:\"/?#&=]"
_EMAIL = re.compile(rf"{_EMAIL_CHARS}+@[^\s@<>()\[\],;:\"'/?#&=%]+\.[^\s@<>()\[\],;:\"'/?#&=%.]+")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_DATE = re.compile(r"\(?(?:[0-9]{1,2}[./-][0-9]{1,2}[./-][0-9]{2,4}|[0-9]{4}[./-][0-9]{1,2}[./-][0-9]{1,2})\b")
# Words one of which every key the rule reads as naming an identifier (or raw biometric data) contains,
# whatever its case: the screens look for them inside keys of JSON text.
KEY_HINTS = (
    "mail",
    "phone",
    "mobile",
    "tel",
    "cell",
    "msisdn",
    "loyalty",
    "token",
    "code",
    "ip",
    "forwarded",
    "palm",
    "face",
    "finger",
    "biometric",
)
_KEY_HINT = "(?i:" + "|".join(KEY_HINTS) + ")"
# a dotted-quad IPv4 address as Python's ipaddress reads one (no leading zeros)
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_IPV4 = re.compile(IPV4)
_TIME_FIELDS = frozenset({"timestamp", "originalTimestamp", "sentAt", "receivedAt"})
_TIMESTAMP = re.compile(
    r"[12][0-9]{3}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?"
)

# Matches the JSON text (as the engine writes it) of anything the rule could change: an '@', percent-encoding,
# an escape that could hide a character, the start of a phone number, a key that may name an identifier.
# The engine's screen reads a key by its ending, as key_family reads it by its last words: one of KEY_WORDS'
# spellings (any case, anything but letters and digits between its words and after them), or one of the
# biometric keys.
_SEPARATORS = r'(?:[^A-Za-z0-9"\\]|\\.)*'  # (an escaped character, a quote among them, is a separator)


def _covers(shorter: list[str], longer: list[str]) -> bool:
    """Whether every key ending in the spelling ``longer`` also ends in the spelling ``shorter``."""
    k = len(shorter)
    return k <= len(longer) and longer[len(longer) - k + 1 :] == shorter[1:] and longer[-k].endswith(shorter[0])


_ENDINGS = [
    words
    for words in (spelling.split() for spelling in KEY_WORDS)
    if not any(other != words and _covers(other, words) for other in (s.split() for s in KEY_WORDS))
]
_KEY_END = (
    "(?i:"
    + "|".join(_SEPARATORS.join(words) for words in _ENDINGS)
    + rf'){_SEPARATORS}"\s*:|"(?:{"|".join(sorted([*BIOMETRIC_KEYS, "entry_token"]))})"\s*:'
)
# identifier fields whose value is already their own type's keyed hash: the rule leaves them as they are, so
# the engine's screen reads the text without them
HASHED_PAIRS = "|".join(
    rf'"(?:{"|".join(re.escape(k) for k in keys)})"\s*:\s*"{IDENTIFIER_CODES[family]}_[0-9a-f]{{32}}"'
    for family in IDENTIFIER_CODES
    if (keys := [k for k, kind in IDENTIFIER_KEYS.items() if kind == family])
)
SCREEN = "|".join(
    [
        "@",
        "%[0-9A-Fa-f]{2}",
        r"\\[bfnrtu]",
        rf"(?:^|{_NOT_WORD}){_PHONE_HEAD}{_PHONE_GROUPS}{{5,}}",
        _KEY_END,
    ]
)


def screen_sql(text: str) -> str:
    """SQL that is true when the rule might change the JSON text ``text`` (an expression of the engine's):
    :data:`SCREEN` over the text without the identifier fields already hashed (:data:`HASHED_PAIRS`)."""

    def quote(pattern: str) -> str:
        return "'" + pattern.replace("'", "''") + "'"

    return f"regexp_matches(regexp_replace({text}, {quote(HASHED_PAIRS)}, '', 'g'), {quote(SCREEN)})"


# the same screen for one string (a value or a key): no key part, as the string's key is judged apart
_STRING_SCREEN = re.compile("|".join(["@", "%[0-9A-Fa-f]{2}", rf"(?:^|{_NOT_WORD}){_PHONE_HEAD}"]))
# Python's regular expressions try a boundary at every position; without it, this pattern finds the
# places the screen's phone part may match several times quicker, and the boundary is checked by hand
_PHONE_START = re.compile(rf"{_PHONE_HEAD}{_PHONE_GROUPS}{{5}}")
_WORD_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_+")


def screen_hits(text: str) -> bool:
    """Whether the rule might change the JSON value whose text is ``text`` (False: it certainly would not).

    The Python twin of :data:`SCREEN`, written for Python's speed: plain substring tests first, the phone
    pattern without its boundary, and key words found with ``str.find`` on the lower-cased text."""
    if "@" in text or "\\" in text or ("%" in text and _PERCENT.search(text)):
        return True
    at = 0
    while (found := _PHONE_START.search(text, at)) is not None:
        at = found.start()
        if at == 0 or text[at - 1] not in _WORD_CHARS:  # where the rule's phone pattern may start
            return True
        at += 1
    lower = text.lower()
    for word in KEY_HINTS:
        at = lower.find(word)
        while at >= 0:
            end = lower.find('"', at)
            if (
                end >= 0
                and lower[end + 1 : end + 16].lstrip()[:1] == ":"
                and _key_changes(text, lower.rfind('"', 0, at), end)
            ):  # the word is inside a key
                return True
            at = lower.find(word, at + 1)
    return False


def _key_changes(text: str, start: int, end: int) -> bool:
    """Whether the rule could change the value of the key ``text[start + 1:end]`` (a key holding a hint word):
    yes for raw biometric data and keys of an identifier type, unless the value is already that type's hash."""
    key = text[start + 1 : end]
    if key in BIOMETRIC_KEYS or key == "entry_token":  # (an entry token's type follows its entry method)
        return True
    family = IDENTIFIER_KEYS.get(key) or _family(key)  # the fields identity resolution reads, then the rest
    if family is None:
        return False
    value = text[end + 2 : end + 39]
    return not (
        family != "ip" and value[36:37] == '"' and is_hashed(value[1:36]) and value[1:3] == IdentifierType(family).code
    )


_FAMILIES: dict[str, str | None] = {}
_PLAIN_KEYS: set[str] = set()  # keys known to hold no identifier in their text


def _family(key: str) -> str | None:
    """``key_family``, remembered: the same few keys come again and again."""
    try:
        return _FAMILIES[key]
    except KeyError:
        family = key_family(key) if isinstance(key, str) else None
        if len(_FAMILIES) < 100_000:
            _FAMILIES[key] = family
        return family


def _remove_biometric(value: object, path: str, problems: list[Problem] | None) -> str:
    if problems is not None:
        problems.append(
            Problem(
                "biometric_data",
                path,
                "<removed>",
                f"{path}: raw biometric data is refused and was removed; send a palm_token instead"
                if value != REMOVED
                else f"{path}: raw biometric data was removed",
            )
        )
    return REMOVED


def key_family(key: str) -> str | None:
    """The identifier type (or ``ip``) a key's last words name, else None.

    >>> key_family("contactEmail"), key_family("Phone_Number"), key_family("x-forwarded-for"), key_family("zip")
    ('email', 'phone', 'ip', None)
    """
    words = [w.lower() for w in _WORDS.findall(key)[-_LONGEST:]]
    for n in range(len(words), 0, -1):
        spelling = _SPELLINGS.get("".join(words[-n:]))
        if spelling is not None:
            meets = {sum(len(w) for w in words[-n:][:i]) for i in range(1, n)}
            if meets <= spelling[1]:  # the key's words run the spelling's together, never split one
                return spelling[0]
    return None


class PersonalData:
    """The rule, bound to an installation's keyed hash, cipher and settings.

    >>> from omnithread.privacy import Secret
    >>> s = Secret(b"0123456789abcdef0123")
    >>> rule = PersonalData(Pseudonymiser(s), PayloadCipher(s))
    >>> rule.text("write to Jane@Example.org or 07700 900123 today").split()[2][:3], rule.text("P00109")
    ('em_', 'P00109')
    """

    def __init__(self, pseudonymiser: Pseudonymiser, cipher: PayloadCipher, ip_mode: str = "truncate"):
        if ip_mode not in IP_MODES:
            raise ConfigError("ip_mode", ip_mode, " or ".join(IP_MODES))
        self.pseudonymiser, self.cipher, self.ip_mode = pseudonymiser, cipher, ip_mode
        self._texts: dict[str, str] = {}

    # -- strings -----------------------------------------------------------------------------------------
    def text(self, value: str) -> str:
        """``value`` with every email address and phone number in it replaced by its keyed hash."""
        if (
            len(value) < 5
            or _STRING_SCREEN.search(value) is None
            or PayloadCipher.is_encrypted(value)
            or _TIMESTAMP.fullmatch(value)
        ):  # a timestamp is never personal data, whatever its digits
            return value
        cached = self._texts.get(value)
        if cached is not None:
            return cached
        result = self._replace(value)
        if result is value and _PERCENT.search(value):
            decoded = _decode(value)
            replaced = self._replace(decoded)
            if replaced is not decoded:
                result = replaced
        if len(self._texts) > 100_000:
            self._texts.clear()
        self._texts[value] = result
        return result

    def _replace(self, value: str) -> str:
        """``value`` with identifiers replaced (the same object when there were none)."""
        original, changed = value, False
        if "@" in value:
            replaced = _EMAIL.sub(self._email_match, value)
            changed, value = replaced != value, replaced
        if _STRING_SCREEN.search(value) is not None:
            replaced = _PHONE.sub(self._phone_match, value)
            changed, value = changed or replaced != value, replaced
        return value if changed else original

    def _email_match(self, match: re.Match) -> str:
        try:
            return self.pseudonymiser.hash(IdentifierType.EMAIL, match.group(0))
        except IdentifierError:
            return match.group(0)

    def _phone_match(self, match: re.Match) -> str:
        candidate = match.group(0)
        return self.pseudonymiser.hash(IdentifierType.PHONE, candidate) if self.is_phone(candidate) else candidate

    def is_phone(self, candidate: str) -> bool:
        """Whether a phone-shaped run of digits is a phone number: one the phone library knows as valid, or
        (for numbers in ranges it does not know, such as those reserved for drama) one of a possible length
        with at least ten digits that is not written as a date."""
        try:
            parsed = phonenumbers.parse(candidate, self.pseudonymiser.phone_region)
        except phonenumbers.NumberParseException:
            return False
        if phonenumbers.is_valid_number(parsed):
            return True
        return (
            sum(c.isdigit() for c in candidate) >= 10
            and _DATE.match(candidate) is None
            and phonenumbers.is_possible_number_with_reason(parsed) == phonenumbers.ValidationResult.IS_POSSIBLE
        )

    def identifier_id(self, value: str) -> str:
        """An id field's value: an email or phone number it *is* becomes that identifier's hash; one it holds
        is replaced in place."""
        if _STRING_SCREEN.search(value) is None or is_hashed(value) or PayloadCipher.is_encrypted(value):
            return value  # (most ids: nothing that starts an email or a phone number)
        if _PHONE.fullmatch(value.strip()) is not None:
            try:  # a whole id of a phone's shape is judged as a phone field is: by its length
                return self.pseudonymiser.hash(IdentifierType.PHONE, value)
            except IdentifierError:
                pass
        return self.text(value)

    # -- values under keys ------------------------------------------------------------------------------
    def keyed(self, family: str, value: object) -> object:
        """The value of a key that names an identifier type (or an IP address)."""
        if family == "ip":
            return self.ip(value) if isinstance(value, str) else self.walk(value)
        if isinstance(value, bool) or value is None or value == "" or not isinstance(value, (str, int)):
            return self.walk(value)
        if isinstance(value, str) and PayloadCipher.is_encrypted(value):
            return value
        try:
            return self.pseudonymiser.hash(IdentifierType(family), value)
        except IdentifierError:
            return self.cipher.encrypt_value(value)

    def ip(self, value: str) -> str:
        """An IP address truncated (IPv4 /24, IPv6 /48) or keyed, as ``ip_mode`` says; a list of them
        (``X-Forwarded-For``) address by address; anything else by the text rule."""
        if value.startswith("ip_") and len(value) == 35:
            return value
        parts = [p.strip() for p in value.split(",")]
        try:
            addresses = [ipaddress.ip_address(p) for p in parts]
        except ValueError:
            return self.text(value)
        if self.ip_mode == "hash":
            return ", ".join("ip_" + self.pseudonymiser.fingerprint(b"ip:" + a.packed) for a in addresses)
        bits = {4: 24, 6: 48}
        return ", ".join(
            str(ipaddress.ip_network(f"{a}/{bits[a.version]}", strict=False).network_address) for a in addresses
        )

    # -- structures -------------------------------------------------------------------------------------
    def walk(self, value: object, path: str = "", problems: list[Problem] | None = None) -> object:
        """A JSON value with the rule applied at every depth (dicts and lists are changed in place). Raw
        biometric data under any key is removed, each removal a problem in ``problems`` (at ``path``)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, (str, dict, list)):
                    new = self.walk(item, f"{path}[{i}]", problems)
                    if new is not item:
                        value[i] = new
            return value
        if not isinstance(value, dict):
            return value
        renamed = []
        for key, item in value.items():
            if key in BIOMETRIC_KEYS:
                value[key] = _remove_biometric(item, f"{path}.{key}" if path else key, problems)
                continue
            family = _family(key)
            if family is not None:
                new = self.keyed(family, item)
            elif isinstance(item, (str, dict, list)):
                new = self.walk(item, f"{path}.{key}" if path else key, problems)
            else:
                new = item
            if new is not item:
                value[key] = new
            if key not in _PLAIN_KEYS:
                new_key = self.text(key)
                if new_key != key:
                    renamed.append((key, new_key))
                elif len(_PLAIN_KEYS) < 100_000:
                    _PLAIN_KEYS.add(key)
        for key, new_key in renamed:
            value[new_key] = value.pop(key)
        return value

    def payload(self, payload: dict, problems: list[Problem] | None = None) -> None:
        """Apply the rule to a whole call in place: ids by the id rule, every other key's value by the rest.

        Most calls hold nothing the rule changes: their JSON text is screened first (:func:`screen_hits`),
        with the context's IP address, the one identifier nearly every web call carries, truncated apart."""
        for key in ID_FIELDS:
            value = payload.get(key)
            if isinstance(value, str):
                new = self.identifier_id(value)
                if new is not value:
                    payload[key] = new
        # what the rule cannot change is left out of the screened text: ISO timestamps (never personal data)
        # and the context's IPv4 address, truncated here
        screened = {
            k: v
            for k, v in payload.items()
            if not (
                k in ID_FIELDS
                and isinstance(v, str)
                or (k in _TIME_FIELDS and isinstance(v, str) and _TIMESTAMP.fullmatch(v))
            )
        }  # ids are done already
        context = payload.get("context")
        ip = context.get("ip") if isinstance(context, dict) else None
        if isinstance(context, dict) and isinstance(ip, str) and self.ip_mode == "truncate" and _IPV4.fullmatch(ip):
            context["ip"] = ip[: ip.rfind(".")] + ".0"
            screened["context"] = {k: v for k, v in context.items() if k != "ip"}
        if not screen_hits(_dumps(screened)):
            return
        ids = {k: payload.pop(k) for k in ID_FIELDS if isinstance(payload.get(k), str)}
        try:
            self.walk(payload, "", problems)
        finally:
            payload.update(ids)

    def json_text(self, text: str) -> str:
        """The rule over one JSON text (a section of a call as the engine holds it): the engine's fast path
        calls this for every text :data:`SCREEN` matches."""
        value = orjson.loads(text)
        before = orjson.dumps(value)
        self.walk(value)
        after = orjson.dumps(value)
        return text if after == before else after.decode()


def _dumps(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # too deep or an integer past 64 bits: screen it as a hit
        return "@"


def _decode(value: str) -> str:
    """Percent-decoding, repeated while it changes (at most three times: doubly encoded URLs exist)."""
    for _ in range(3):
        decoded = unquote(value)
        if decoded == value:
            break
        value = decoded
    return value
