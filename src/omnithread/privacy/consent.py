"""Recording consent per purpose, with its source and time, as a ``Consent Updated`` event.

Purposes: ``analytics``, ``personalisation``, ``biometric``. The latest answer per purpose wins
(profiles read it). A person without personalisation consent gets only non-personal
recommendations; a person without biometric consent has their palm tokens refused at the door.
"""

from __future__ import annotations

from datetime import UTC, datetime

from omnithread.errors import ConfigError, InvalidEventError, Problem
from omnithread.events.schema import CONSENT_PURPOSES

__all__ = ["record_consent"]


def record_consent(ws, key: str, purposes: dict, source: str) -> dict:
    """Store the answer for the person found by ``key``; returns the person and what was stored."""
    from omnithread.identity import resolve_identities
    from omnithread.identity.incremental import update_identities
    from omnithread.identity.lookup import find_person
    from omnithread.profile import build_profiles

    if not isinstance(purposes, dict) or not purposes:
        raise ConfigError("purposes", purposes, f"an object of purpose -> true/false ({', '.join(CONSENT_PURPOSES)})")
    unknown = sorted(set(purposes) - set(CONSENT_PURPOSES))
    if unknown or not all(isinstance(v, bool) for v in purposes.values()):
        raise ConfigError("purposes", purposes, f"purposes among {', '.join(CONSENT_PURPOSES)}, each true or false")
    engine = ws.engine
    if not engine.has_table("identity_map"):
        resolve_identities(engine, ws.pseudonymiser)
    person = find_person(engine, key, ws.pseudonymiser)
    anchor = engine.rows("""SELECT identifier FROM identity_map WHERE person_id = ? AND (identifier LIKE 'account:%'
                            OR identifier LIKE 'device:%') ORDER BY identifier LIKE 'account:%' DESC, identifier
                            LIMIT 1""", [person])
    if not anchor:
        raise ConfigError("person", person, "a person with an account or a device to record consent against")
    kind, value = anchor[0]["identifier"].split(":", 1)
    now = datetime.now(UTC)
    event = {"type": "track", "event": "Consent Updated", "messageId": f"consent-{person}-{now.timestamp():.6f}",
             "timestamp": now.isoformat(), "context": {"channel": "server"},
             "properties": {"purposes": purposes, "source": source},
             **({"userId": value} if kind == "account" else {"anonymousId": value})}
    ingestor = ws.ingestor(received_at=now)
    ingestor.begin(f"consent:{source}")
    ingestor.submit_payload(event, f"consent:{source}")
    ingestor.flush()
    if ingestor.report.accepted != 1:
        raise InvalidEventError([Problem("consent_not_stored", "purposes", str(purposes),
                                         "the consent event was not stored")])
    update_identities(engine, ws.pseudonymiser)
    build_profiles(engine)
    ws.log.reload_suppression()
    return {"person_id": person, "purposes": purposes, "source": source, "recorded_at": now.isoformat()}
