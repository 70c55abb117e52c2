"""One person: their identifiers, the evidence that joined them, and what they did."""

from __future__ import annotations

from omnithread.engine.base import Engine
from omnithread.errors import NotFoundError
from omnithread.identity.graph import EVENT_PERSONS_SQL
from omnithread.privacy import IdentifierError, IdentifierType, Pseudonymiser

__all__ = ["find_person", "describe_person", "own_identifiers"]


def _candidates(key: str, pseudonymiser: Pseudonymiser) -> list[str]:
    """Node ids a user's key may mean: a node id, an account or device id, or a raw email or phone."""
    if ":" in key and key.split(":", 1)[0] in (
        "account",
        "device",
        "voice_device",
        "store_session",
        "email",
        "phone",
        "loyalty_card",
        "payment_token",
        "palm_token",
        "app_code",
    ):
        return [key]
    nodes = [f"account:{key}", f"device:{key}", f"voice_device:{key}", f"store_session:{key}"]
    for kind in (IdentifierType.EMAIL, IdentifierType.PHONE, IdentifierType.LOYALTY_CARD):
        try:
            nodes.append(f"{kind.value}:{pseudonymiser.hash(kind, key)}")
        except IdentifierError:
            continue
    return nodes


def find_person(engine: Engine, key: str, pseudonymiser: Pseudonymiser) -> str:
    """The person_id for a person id or any identifier of theirs; raises NotFoundError."""
    if key.startswith("p_"):
        if engine.scalar("SELECT count(*) FROM persons WHERE person_id = ?", [key]):
            return key
        redirected = engine.scalar("SELECT person_id FROM person_redirects WHERE old_person_id = ?", [key])
        if redirected:
            return redirected
    nodes = _candidates(key, pseudonymiser)
    marks = ", ".join("?" for _ in nodes)
    found = engine.rows(f"SELECT person_id, blocked_reason FROM identity_map WHERE identifier IN ({marks})", nodes)
    for row in found:
        if row["person_id"]:
            return row["person_id"]
    if found:
        raise NotFoundError("person", f"{key} (blocked: {found[0]['blocked_reason']})")
    raise NotFoundError("person", key)


def describe_person(engine: Engine, person_id: str) -> dict:
    """Identifiers, evidence links and a summary of activity by channel for one person."""
    identifiers = engine.rows(
        """
        SELECT identifier_type, substr(identifier, strpos(identifier, ':') + 1) AS value, events, first_seen_at,
               last_seen_at
        FROM identity_map WHERE person_id = ? ORDER BY identifier_type, value""",
        [person_id],
    )
    if not identifiers:
        raise NotFoundError("person", person_id)
    links = engine.rows(
        """
        SELECT a, b, events, first_seen_at, first_message_id, rules, status, reason FROM identity_edges
        WHERE a IN (SELECT identifier FROM identity_map WHERE person_id = ?)
           OR b IN (SELECT identifier FROM identity_map WHERE person_id = ?)
        ORDER BY status DESC, events DESC, a, b""",
        [person_id, person_id],
    )
    activity = engine.rows(
        f"""
        SELECT coalesce(channel, 'unspecified') AS channel, count(*) AS events,
               count(*) FILTER (WHERE event = 'Order Completed') AS orders,
               round(sum(TRY_CAST(properties->>'total' AS DOUBLE))
                     FILTER (WHERE event = 'Order Completed'), 2) AS revenue,
               min(event_at) AS first_seen_at, max(event_at) AS last_seen_at
        FROM ({EVENT_PERSONS_SQL}) WHERE person_id = ?
        GROUP BY 1 ORDER BY events DESC""",
        [person_id],
    )
    return {"person_id": person_id, "identifiers": identifiers, "links": links, "activity": activity}


BRIDGES = ("payment_token", "device", "voice_device", "store_session")  # what families and households share
ANCHORS = ("account", "email", "phone", "loyalty_card", "palm_token", "app_code")  # one person's own


def own_identifiers(engine: Engine, key: str, pseudonymiser: Pseudonymiser, identifiers: list[str]) -> set[str]:
    """The requester's own identifiers within their resolved person.

    A person may hold other people joined through an identifier they share (a borrowed payment card,
    a household tablet). Starting from the identifier the request named, the graph's kept links are
    followed, but not through an identifier of a shareable kind (payment token, device, store visit):
    those are reached, and erased with the requester, but when two accounts, cards or other personal identifiers
    of one kind meet at such a shared identifier, what lies beyond it stays with the others. A request
    by person id cannot tell people apart and takes the whole person."""
    mine = set(identifiers)
    start = [n for n in (_candidates(key, pseudonymiser) if not key.startswith("p_") else []) if n in mine]
    if not start:
        return mine
    links: dict[str, set[str]] = {}
    for e in engine.rows("SELECT a, b FROM identity_edges WHERE status = 'kept'"):
        if e["a"] in mine and e["b"] in mine:
            links.setdefault(e["a"], set()).add(e["b"])
            links.setdefault(e["b"], set()).add(e["a"])

    def shared(node: str) -> bool:
        # the personal identifiers this shareable one meets, directly or through other shareable ones
        anchors, around, stack = set(), {node}, [node]
        while stack:
            for n in links.get(stack.pop(), ()):
                if n.split(":", 1)[0] in ANCHORS:
                    anchors.add(n)
                elif n not in around:
                    around.add(n)
                    stack.append(n)
        kinds = [a.split(":", 1)[0] for a in anchors]
        return any(kinds.count(k) > 1 for k in set(kinds))

    seen, todo = set(start), list(start)
    while todo:
        node = todo.pop()
        if node.split(":", 1)[0] in BRIDGES and node not in start and shared(node):
            continue  # a card or device that two people's cards or accounts meet at: reached, not crossed
        for nxt in links.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
