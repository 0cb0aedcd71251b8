"""JSON form of :class:`Relation` for the replica's ``_syncline.relations`` table."""

from __future__ import annotations

from typing import Any

import msgspec

from syncline.core.events import Column, Relation, UserType


def relation_to_json(rel: Relation) -> str:
    doc = {
        "oid": rel.oid,
        "schema": rel.schema,
        "name": rel.name,
        "replident": rel.replident,
        "key": list(rel.key),
        "columns": [
            {
                "name": c.name,
                "type_oid": c.type_oid,
                "typmod": c.typmod,
                "type_name": c.type_name,
                "category": c.category,
                "element": c.element,
                "base": c.base,
                "in_identity": c.in_identity,
            }
            for c in rel.columns
        ],
        "user_types": [
            {
                "schema": u.schema,
                "name": u.name,
                "kind": u.kind,
                "labels": list(u.labels),
                "attributes": [list(a) for a in u.attributes],
                "base": u.base,
            }
            for u in rel.user_types
        ],
    }
    return msgspec.json.encode(doc).decode()


def relation_from_json(doc: str | bytes | dict[str, Any]) -> Relation:
    d: dict[str, Any] = msgspec.json.decode(doc) if isinstance(doc, str | bytes) else doc
    return Relation(
        oid=int(d["oid"]),
        schema=str(d["schema"]),
        name=str(d["name"]),
        replident=str(d["replident"]),
        columns=tuple(
            Column(
                name=str(c["name"]),
                type_oid=int(c["type_oid"]),
                typmod=int(c["typmod"]),
                type_name=str(c["type_name"]),
                category=str(c.get("category", "U")),
                element=str(c.get("element", "")),
                base=str(c.get("base", "")),
                in_identity=bool(c.get("in_identity", False)),
            )
            for c in d["columns"]
        ),
        key=tuple(str(k) for k in d["key"]),
        user_types=tuple(
            UserType(
                schema=str(u["schema"]),
                name=str(u["name"]),
                kind=str(u["kind"]),
                labels=tuple(str(x) for x in u.get("labels", ())),
                attributes=tuple((str(a[0]), str(a[1])) for a in u.get("attributes", ())),
                base=str(u.get("base", "")),
            )
            for u in d.get("user_types", ())
        ),
    )
