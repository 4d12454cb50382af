"""References in a spreadsheet written as people write them: 'Internet', 'NGINX', 'SIPProxy.INT'.

A matrix's names are case-sensitive, but a table typed by hand (the source
document writes Internet, NGINX, CTI1, HTTPS) should not fail on case alone:
a reference that is no name but matches exactly one name when case is
ignored is taken as that name. Anything else is left as written, for the
loader to accept (a literal address) or refuse at its cell (an unknown name).
"""

from __future__ import annotations

from typing import Iterable


def folded_names(names: Iterable[str]) -> dict[str, str | None]:
    """casefolded name -> the name, or None when two names fold alike (then neither is guessed)."""
    out: dict[str, str | None] = {}
    for name in names:
        key = name.casefold()
        out[key] = None if key in out and out[key] != name else name
    return out


def _address_names(doc: dict) -> Iterable[str]:
    """Every name a `from`, `to`, NAT target or group member may use."""
    yield from doc.get("zones") or {}
    yield from doc.get("groups") or {}
    for host, fields in (doc.get("hosts") or {}).items():
        yield host
        addresses = fields.get("addresses")
        for address in addresses if isinstance(addresses, dict) else ():
            yield f"{host}.{address}"
        for role in fields.get("roles") or ():
            yield role
            for address in addresses if isinstance(addresses, dict) else ():
                yield f"{role}.{address}"
    for firewall, fields in (doc.get("firewalls") or {}).items():
        yield firewall  # its own services
        for interface, zone in (fields.get("interfaces") or {}).items():
            if isinstance(zone, dict):  # an interface with the firewall's address on it: `fw.iface`
                yield f"{firewall}.{interface}"
        public = fields.get("public")
        for name in public if isinstance(public, dict) else (("public",) if public else ()):
            yield f"{firewall}.{name}"


def _fix(value: object, exact: set[str], folded: dict[str, str | None]) -> object:
    if isinstance(value, list):
        return [_fix(item, exact, folded) for item in value]
    if isinstance(value, str) and value not in exact:
        return folded.get(value.casefold()) or value
    return value


def canonical_references(doc: dict) -> None:
    """Rewrite the document's references to the names they match but for case (in place)."""
    names = set(_address_names(doc))
    folded = folded_names(names)
    services = set(doc.get("services") or {})
    folded_services = folded_names(services)
    for group, members in (doc.get("groups") or {}).items():
        if isinstance(members, dict):
            members["members"] = _fix(members["members"], names, folded)
        else:
            doc["groups"][group] = _fix(members, names, folded)
    accesses = [a for fields in (doc.get("firewalls") or {}).values() for a in fields.get("management") or ()]
    for entry in list(doc.get("openings") or []) + accesses:
        for key in ("from", "to"):
            if key in entry:
                entry[key] = _fix(entry[key], names, folded)
        if "service" in entry:
            entry["service"] = _fix(entry["service"], services, folded_services)
        nat = entry.get("nat")
        if isinstance(nat, dict):
            nat["to"] = _fix(nat["to"], names, folded)
        elif nat is not None:
            entry["nat"] = _fix(nat, names, folded)
        if "snat" in entry:
            entry["snat"] = _fix(entry["snat"], names, folded)
