"""Every service's OpenAPI document as valid OpenAPI 3.0.

BentoML 1.4 declares its documents ``openapi: 3.0.2`` but fills them with pydantic v2's JSON
Schema 2020-12 (its own endpoints and a mounted FastAPI app's alike): numeric
``exclusiveMinimum``, ``anyOf [..., {"type": "null"}]``, ``const``, ``examples``,
``prefixItems``. Validators and generators that read the document as 3.0 (schemathesis,
openapi-generator) reject those parts. :func:`openapi_30` rewrites them into their 3.0
equivalents (``minimum`` + ``exclusiveMinimum: true``, ``nullable``, ``enum``, ``example``),
meaning unchanged; the services serve the rewritten document (``bentos.shared.declare``).
"""

from __future__ import annotations

from typing import Any

import yaml

_NULL = {"type": "null"}
_BENTOML_ERROR_DETAIL = "Error Detail"
_DROPPED = ("prefixItems", "propertyNames", "$schema", "contentMediaType", "unevaluatedProperties")


def openapi_30(document: Any) -> Any:
    """A copy of ``document`` with every JSON-Schema-2020 construct in 3.0 form."""
    if isinstance(document, list):
        return [openapi_30(item) for item in document]
    if not isinstance(document, dict):
        return document
    node = {key: openapi_30(value) for key, value in document.items()}
    _bounds(node, "exclusiveMinimum", "minimum", max)
    _bounds(node, "exclusiveMaximum", "maximum", min)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("examples"), list) and not _is_media_examples(node):
        examples = node.pop("examples")
        if examples:
            node.setdefault("example", examples[0])
    if isinstance(node.get("type"), list):
        _type_list(node)
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list) and _NULL in node[key]:
            _nullable(node, key)
    if "default" in node and node["default"] is None and ("type" in node or "allOf" in node):
        node["nullable"] = True  # BentoML drops the null branch of optional fields
    if "prefixItems" in node:  # tuples: 3.0 can only say "an array"
        node.setdefault("items", {})
    for key in _DROPPED:
        node.pop(key, None)
    return node


def _bounds(node: dict, exclusive: str, inclusive: str, stricter: Any) -> None:
    """2020-12's numeric ``exclusiveMinimum: x`` is 3.0's ``minimum: x`` + ``true``."""
    value = node.get(exclusive)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    current = node.get(inclusive)
    if current is not None and stricter(current, value) == current and current != value:
        node.pop(exclusive)  # the inclusive bound is the stricter one
        return
    node[inclusive] = value
    node[exclusive] = True


def _type_list(node: dict) -> None:
    """``type: [X, "null"]`` is 3.0's ``type: X`` + ``nullable: true``."""
    kinds = node.pop("type")
    rest = [kind for kind in kinds if kind != "null"]
    if len(rest) < len(kinds):
        node["nullable"] = True
    if len(rest) == 1:
        node["type"] = rest[0]
    elif rest:
        node["anyOf"] = [{"type": kind} for kind in rest]


def _nullable(node: dict, key: str) -> None:
    """``anyOf [X, null]`` is 3.0's ``X`` + ``nullable: true``."""
    rest = [option for option in node.pop(key) if option != _NULL]
    node["nullable"] = True
    if len(rest) > 1:
        node[key] = rest
    elif rest and "$ref" in rest[0]:
        node["allOf"] = [rest[0]]  # siblings of a $ref are ignored in 3.0
    elif rest:
        for name, value in rest[0].items():
            node.setdefault(name, value)


def _is_media_examples(node: dict) -> bool:
    """A Media Type or Parameter object's ``examples`` is a map, not a schema's list."""
    return "schema" in node


class OpenAPI30Document:
    """BentoML's document object, rendered as 3.0 wherever BentoML renders it (``asdict``
    for ``/docs.json``, YAML for a built bento's ``apis/openapi.yaml``)."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def asdict(self) -> dict[str, Any]:
        document = openapi_30(self.spec.asdict())
        for schema in document.get("components", {}).get("schemas", {}).values():
            detail = schema.get("properties", {}).get("detail", {})
            if detail.get("title") == _BENTOML_ERROR_DETAIL:
                # BentoML's error bodies declare a text ``detail``, yet its 400s for invalid
                # input carry pydantic's list of errors there
                detail.pop("type", None)
                detail["description"] = "text, or the list of validation errors"
        return document


yaml.add_representer(
    OpenAPI30Document, lambda dumper, document: dumper.represent_dict(document.asdict())
)
