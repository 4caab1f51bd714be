"""Compact storage of a decision: shared documents by digest, the rest zlib-compressed.

A decision is the document ``{"i": inputs, "o": outputs, "m": models, ...}``. Parts that
many decisions share (the model versions, the policy, the portfolio, a bar's features, the
specialists' answers on a bar) are cut out at :data:`REF_PATHS`, stored once as *refs* under
the first 16 bytes of the sha256 of their JSON (:func:`dump`), and replaced by
``"$ref:<hex>"``: from a part's second use on (the writer says which parts are shared; one
used once stays in the body, where it costs less than a ref of its own). The decision id
and inputs digest, which are columns, are replaced by markers. What is left is compressed
with a preset dictionary of the keys every decision repeats (format byte :data:`FORMAT`
first, so a later dictionary can be added beside this one). Unpacking restores
exactly the JSON values that went in, so the inputs still hash to the inputs digest.

The JSON here is orjson's (sorted keys, so equal parts get equal digests): storage, not the
canonical form the inputs digest is taken over (``render.canonical_json``), and about fifteen
times faster to write than the standard library's, on the writer thread that every decision
waits for.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson

FORMAT = 1
REF_PATHS: tuple[tuple[str, ...], ...] = (
    ("i", "features"),
    ("i", "policy"),
    ("i", "models"),
    ("i", "portfolio"),
    ("o", "metadata", "models"),
    ("o", "explanation", "features"),
    ("o", "explanation", "specialists"),
    ("m",),
)
_REF = "$ref:"
_ID, _DIGEST = "$id", "$digest"
# The keys and values every decision repeats, in canonical (sorted) order.
_ZDICT = (
    b'{"i":{"as_of":"T00:00:00","bars_digest":null,"blend_mode":"mixture","data_source":"store",'
    b'"features":"$ref:","models":"$ref:","policy":"$ref:","portfolio":"$ref:",'
    b'"portfolio_source":"state","price":,"regime":{"bear":0.,"bull":0.,"sideways":0.},'
    b'"risk_check":true,"sector":null,"strategy_override":null,"symbol":"SPX","timestamp":null},'
    b'"m":"$ref:","o":{"action":"BUY","confidence":0.,"decision_id":"$id","explanation":null,'
    b'"metadata":{"as_of":"T00:00:00","blend_mode":"argmax","data_source":"request",'
    b'"fallbacks":{},"inputs_digest":"$digest","latency_ms":,"model_version":"bull_specialist",'
    b'"models":"$ref:","portfolio_source":"request","price":,"strategy_override":null,'
    b'"timestamp":"T00:00:00.000000Z"},"recommended_quantity":,"regime_probabilities":{"bull":0.,'
    b'"bear":0.,"sideways":0.,"entropy":0.,"entropy_normalized":0.},"risk_validation":{"approved":'
    b'true,"warnings":[],"checks":{"position_limit":"pass","concentration":"pass",'
    b'"daily_loss_limit":"pass","leverage":"pass"},"rejections":[],"allowed_quantity":,"exposure":'
    b'{"equity":,"position_fraction":0.,"sector_fraction":0.,"leverage":0.,"daily_loss":0.0}},'
    b'"strategy_weights":{"bull_specialist":0.,"bear_specialist":0.,"sideways_specialist":0.},'
    b'"symbol":"NASDAQ"}},"action":"HOLD","SELL","position_limit: position would be  of equity; '
    b'the limit is 25.0%","check":"position_limit","limit":0.25,"message":,"proposed":'
    b'warning","fail","universal","mixture","sideways_specialist","bear_specialist"'
)


_DUMP_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def dump(value: Any) -> bytes:
    """``value`` as JSON with sorted keys: equal values, equal bytes (and so equal digests).
    What is not JSON is written as its ``str``, as ``render.canonical_json`` writes it."""
    return orjson.dumps(value, default=str, option=_DUMP_OPTIONS)


# a compressor primed with the dictionary, copied for each body: priming one hashes the whole
# dictionary, which costs more than compressing a decision (the same bytes come out)
_PRIMED = zlib.compressobj(level=6, zdict=_ZDICT)


def compress(data: bytes) -> bytes:
    packer = _PRIMED.copy()
    return bytes([FORMAT]) + packer.compress(data) + packer.flush()


def decompress(blob: bytes) -> bytes:
    if not blob or blob[0] != FORMAT:
        raise ValueError(f"unknown decision body format {blob[:1]!r}")
    unpacker = zlib.decompressobj(zdict=_ZDICT)
    return unpacker.decompress(blob[1:]) + unpacker.flush()


def ref_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:16]


def pack(
    document: dict[str, Any],
    decision_id: str,
    inputs_digest: str,
    shared: Callable[[bytes], bool] = lambda digest: True,
) -> tuple[bytes, dict[bytes, bytes]]:
    """The decision's own body and the refs it uses (digest -> JSON, not yet
    compressed: most refs are stored already, and only a new one is worth compressing).
    A part for which ``shared(digest)`` is false stays in the body (a part used once costs
    less there than as a ref of its own)."""
    document = _copy_paths(document)
    refs: dict[bytes, bytes] = {}
    seen: dict[int, bytes | None] = {}  # an object in several places (the models): asked once
    for path in REF_PATHS:
        parent, key = _parent(document, path)
        value = None if parent is None else parent.get(key)
        if not isinstance(value, dict | list) or not value:
            continue
        if id(value) in seen:
            digest = seen[id(value)]
        else:
            data = dump(value)
            digest = ref_digest(data)
            if shared(digest):
                refs[digest] = data
            else:
                digest = None
            seen[id(value)] = digest
        if digest is not None:
            parent[key] = _REF + digest.hex()
    outputs = document.get("o")
    if isinstance(outputs, dict):
        if outputs.get("decision_id") == decision_id:
            outputs["decision_id"] = _ID
        metadata = outputs.get("metadata")
        if isinstance(metadata, dict) and metadata.get("inputs_digest") == inputs_digest:
            metadata["inputs_digest"] = _DIGEST
    return compress(dump(document)), refs


def _ref_slots(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, bytes]]:
    """Each place of a packed document that names a ref: (parent, key, digest)."""
    for path in REF_PATHS:
        parent, key = _parent(document, path)
        value = None if parent is None else parent.get(key)
        if isinstance(value, str) and value.startswith(_REF):
            yield parent, key, bytes.fromhex(value[len(_REF) :])


def ref_digests(body: bytes) -> list[bytes]:
    """The refs a packed body names (for exports that resolve them in bulk)."""
    return [digest for _, _, digest in _ref_slots(orjson.loads(decompress(body)))]


def unpack(
    body: bytes, decision_id: str, inputs_digest: str, resolve: Callable[[bytes], bytes]
) -> dict[str, Any]:
    """The document :func:`pack` was given; ``resolve(digest)`` returns a compressed ref."""
    document = orjson.loads(decompress(body))
    for parent, key, digest in list(_ref_slots(document)):
        parent[key] = orjson.loads(decompress(resolve(digest)))
    outputs = document.get("o")
    if isinstance(outputs, dict):
        if outputs.get("decision_id") == _ID:
            outputs["decision_id"] = decision_id
        metadata = outputs.get("metadata")
        if isinstance(metadata, dict) and metadata.get("inputs_digest") == _DIGEST:
            metadata["inputs_digest"] = inputs_digest
    return document


def _parent(document: dict[str, Any], path: tuple[str, ...]) -> tuple[dict | None, str]:
    node: Any = document
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), path[-1]


def _copy_paths(document: dict[str, Any]) -> dict[str, Any]:
    """A copy whose dicts along :data:`REF_PATHS` are new (the caller's stay untouched)."""
    copy = dict(document)
    for top in ("i", "o"):
        if isinstance(copy.get(top), dict):
            copy[top] = dict(copy[top])
    outputs = copy.get("o")
    if isinstance(outputs, dict):
        for key in ("metadata", "explanation"):
            if isinstance(outputs.get(key), dict):
                outputs[key] = dict(outputs[key])
    return copy
