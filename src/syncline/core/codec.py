"""JSON encoding of schema objects (relations) for bookkeeping tables and the log."""

from __future__ import annotations

import msgspec

from syncline.core.events import Relation

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Relation)


def relation_to_json(rel: Relation) -> bytes:
    return _enc.encode(rel)


def relation_from_json(data: bytes | str) -> Relation:
    return _dec.decode(data)
