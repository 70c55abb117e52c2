"""Audience export files for ad platforms' customer-list matching (Google Customer Match, Meta Custom
Audiences), and the contact vault they are made from.

**The problem.** The platforms match people by the SHA-256 of a normalised email or phone. The log never
holds raw emails or phones, only keyed hashes (HMAC with the installation's secret), which no platform can
match. Storing raw contacts to export them would undo the log's privacy.

**The vault.** Contacts reach the vault only from a list the retailer imports (``import_contacts``: its CRM's
export of customers who opted in to advertising), never from the event stream. Each row must say the person
consented to ``advertising``; rows without that consent are not stored (and withdraw an earlier one). For a
consented row, the vault keeps the platform-ready values only: each platform's normalisation then SHA-256
(the raw email and phone are discarded at once), encrypted with the data directory's key (Fernet, the key
that encrypts rejected payloads), and keyed by the identity-map nodes the row names (its account, and the
keyed hashes of its email and phone), which is how an audience's persons find their row. Erasing a person
deletes their vault rows; a person whose latest ``advertising`` consent in the log is a refusal is never
exported, whatever the list said.

**The files.** ``export_audience`` writes one CSV per platform: Google's Customer Match headers (``Email``,
``Phone``) with SHA-256 of the email trimmed, lower-cased and, for gmail.com and googlemail.com, without dots
before the ``@``, and of the phone in E.164 (``+447700900123``); Meta's (``email``, ``phone``) with SHA-256 of
the email trimmed and lower-cased, and of the phone as digits with its country code and no ``+``
(``447700900123``). The tests check these against published vectors.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterable

from omnithread.engine.base import Engine
from omnithread.errors import InvalidRequestError, NotFoundError
from omnithread.privacy.identifiers import IdentifierError, IdentifierType, normalise_email, normalise_phone
from omnithread.profile import profile_columns

__all__ = ["PLATFORMS", "platform_values", "import_contacts", "export_audience", "forget_contacts"]

PLATFORMS = {"google": ("Email", "Phone"), "meta": ("email", "phone")}
_YES = {True, "1", "true", "yes", "y", "t"}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def platform_values(email: str | None, phone: str | None, region: str = "GB") -> dict[str, str | None]:
    """Each platform's SHA-256 of the normalised email and phone (None where absent); raises
    ``IdentifierError`` (which never repeats the value whole) for one that is not an email or phone."""
    out: dict[str, str | None] = {f"{p}_{k}": None for p in PLATFORMS for k in ("email", "phone")}
    if email not in (None, ""):
        plain = normalise_email(email)
        local, _, domain = plain.partition("@")
        google = f"{local.replace('.', '')}@{domain}" if domain in ("gmail.com", "googlemail.com") else plain
        out["google_email"], out["meta_email"] = _sha256(google), _sha256(plain)
    if phone not in (None, ""):
        e164 = normalise_phone(phone, region=region)
        out["google_phone"], out["meta_phone"] = _sha256(e164), _sha256(e164.lstrip("+"))
    return out


def _ensure(engine: Engine) -> None:
    engine.execute("""
        CREATE TABLE IF NOT EXISTS contact_vault (
            contact_key VARCHAR PRIMARY KEY, nodes VARCHAR[] NOT NULL, sealed VARCHAR NOT NULL,
            consented_at TIMESTAMPTZ NOT NULL, source VARCHAR)""")


def import_contacts(engine: Engine, pseudonymiser, cipher, rows: Iterable[dict], source: str = "") -> dict:
    """Store the advertising-consented contacts of ``rows`` (``user_id``, ``email``, ``phone``,
    ``advertising_consent``) in the vault; a row without consent removes any earlier one of the same
    contact. Returns what was stored, withdrawn, left out and refused (by row number and field, never the
    value)."""
    _ensure(engine)
    report: dict[str, Any] = {"rows": 0, "stored": 0, "withdrawn": 0, "without_consent": 0, "refused": []}
    now = datetime.now(UTC)
    for number, row in enumerate(rows, start=1):
        report["rows"] += 1
        if not isinstance(row, dict):
            report["refused"].append({"row": number, "field": "row", "reason": "not an object"})
            continue
        user = str(row.get("user_id") or "").strip()
        email, phone = row.get("email") or None, row.get("phone") or None
        nodes = [f"account:{user}"] if user else []
        try:
            values = platform_values(email, phone, pseudonymiser.phone_region)
            if email:
                nodes.append(f"email:{pseudonymiser.hash(IdentifierType.EMAIL, email)}")
            if phone:
                nodes.append(f"phone:{pseudonymiser.hash(IdentifierType.PHONE, phone)}")
        except IdentifierError as error:
            report["refused"].append({"row": number, "field": error.problem.field, "reason": error.problem.message})
            continue
        if not nodes or not any(values.values()):
            report["refused"].append({"row": number, "field": "email", "reason": "no email or phone to match on"})
            continue
        key = nodes[0]
        consent = row.get("advertising_consent")
        consent = consent.strip().lower() if isinstance(consent, str) else consent
        if consent not in _YES:
            report["without_consent"] += 1
            report["withdrawn"] += engine.delete_where("contact_vault", "contact_key = ?", [key])
            continue
        sealed = cipher.encrypt_value(json.dumps(values))
        engine.delete_where("contact_vault", "contact_key = ?", [key])
        engine.execute("INSERT INTO contact_vault VALUES (?, ?, ?, ?, ?)", [key, nodes, sealed, now, source])
        report["stored"] += 1
    return report


def forget_contacts(engine: Engine, nodes: list[str]) -> int:
    """An erased person's vault rows (any naming one of their identity nodes); how many went."""
    if not nodes or not engine.has_table("contact_vault"):
        return 0
    marks = ", ".join("?" * len(nodes))
    return engine.delete_where(
        "contact_vault", f"contact_key IN (SELECT contact_key FROM (SELECT contact_key, unnest(nodes) AS node "
        f"FROM contact_vault) WHERE node IN ({marks}))", nodes,
    )  # fmt: skip


def export_audience(engine: Engine, cipher, audience: str, platform: str, out: Path) -> dict:
    """Write ``audience``'s members with a vaulted contact as ``platform``'s customer-list CSV; members who
    refused advertising in the log, or have no consented contact, are left out (and counted)."""
    if platform not in PLATFORMS:
        raise InvalidRequestError("platform", platform, "one of " + ", ".join(PLATFORMS))
    if not engine.has_table("audiences") or not engine.scalar(
        "SELECT count(*) FROM audiences WHERE name = ?", [audience]
    ):
        raise NotFoundError("audience", audience)
    members = engine.scalar("SELECT count(*) FROM audience_members WHERE audience = ?", [audience])
    refused_column = "consent_advertising" in profile_columns(engine)
    refused_sql = "AND coalesce(p.consent_advertising, true)" if refused_column else ""
    rows = []
    if engine.has_table("contact_vault"):
        rows = engine.rows(
            f"""SELECT DISTINCT m.person_id, v.contact_key, v.sealed
                FROM audience_members m
                JOIN profiles p ON p.person_id = m.person_id
                JOIN identity_map i ON i.person_id = m.person_id
                JOIN (SELECT contact_key, sealed, unnest(nodes) AS node FROM contact_vault) v ON v.node = i.identifier
                WHERE m.audience = ? {refused_sql}
                ORDER BY m.person_id, v.contact_key""",
            [audience],
        )
    refused = 0
    if refused_column:
        refused = engine.scalar(
            "SELECT count(*) FROM audience_members m JOIN profiles p ON p.person_id = m.person_id "
            "WHERE m.audience = ? AND p.consent_advertising = false",
            [audience],
        )
    headers = PLATFORMS[platform]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen: set[tuple] = set()
    persons: set[str] = set()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        for r in rows:
            values = json.loads(str(cipher.decrypt_value(r["sealed"])))
            line = (values.get(f"{platform}_email") or "", values.get(f"{platform}_phone") or "")
            if line in seen or not any(line):
                continue
            seen.add(line)
            persons.add(r["person_id"])
            writer.writerow(line)
    return {
        "audience": audience,
        "platform": platform,
        "members": members,
        "exported_persons": len(persons),
        "rows": len(seen),
        "refused_advertising": refused,
        "without_contact": members - len(persons) - refused,
        "path": str(out),
    }
