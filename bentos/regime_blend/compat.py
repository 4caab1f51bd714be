"""What the seed's clients rely on: specialist names, the seed route's defaults (argmax
blending with the seed's quantity formula, the 403 risk rejection) and its headers.

The seed's ``POST /api/v1/predict`` keeps the seed's contract unless the request or the
deployment asks for better: :data:`SEED_MODES` are its modes when neither names one.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import JSONResponse

from bentos.regime_blend.settings import RouteModes
from registry.families import SPECIALIST_ROLES

SEED_SUFFIX = "_specialist"
REJECTED = "Trade rejected by risk manager"
SEED_MODES = RouteModes(blend_mode="argmax", risk_mode="reject")
MAX_HEADER_CHARS = 2048
# printable ASCII except '%' (the escape) and ',' (the seed's list separator) stays as is
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%,")


def seed_name(role: str) -> str:
    """``bull`` → ``bull_specialist``; the universal model keeps the seed's plain name."""
    return role if role == "universal" else f"{role}{SEED_SUFFIX}"


def parse_override(text: str) -> str | None:
    """The role an override names (``bull``, ``bull_specialist``, ``specialist-bull``), or
    None when it names no known specialist."""
    name = text.strip().lower()
    for candidate in (name, name.removesuffix(SEED_SUFFIX), name.removeprefix("specialist-")):
        if candidate in SPECIALIST_ROLES:
            return candidate
    return None


def warnings_header(warnings: list[str]) -> str:
    """``X-Risk-Warnings``: the warnings comma-joined (the seed's format), each one
    percent-encoded outside printable ASCII, so text from a request (a sector with CR/LF,
    non-Latin letters) can never end or forge a header; capped at ``MAX_HEADER_CHARS``."""
    header = ",".join(quote(warning, safe=_HEADER_SAFE) for warning in warnings)
    return header[:MAX_HEADER_CHARS]


def rejection_headers(decision_id: str, warnings: list[str], allowed_quantity: int) -> dict:
    """The seed's ``X-Risk-Warnings`` plus the (logged) decision and the largest allowed
    quantity, which the seed's body-less 403 cannot carry."""
    return {
        "X-Risk-Warnings": warnings_header(warnings),
        "X-Decision-Id": decision_id,
        "X-Allowed-Quantity": str(allowed_quantity),
    }


def rejection_response(
    decision_id: str, warnings: list[str], allowed_quantity: int
) -> JSONResponse:
    """The seed's ``403 {"detail": "Trade rejected by risk manager"}`` (FastAPI's
    ``HTTPException`` body, no decision) with ``X-Risk-Warnings``."""
    return JSONResponse(
        {"detail": REJECTED},
        status_code=403,
        headers=rejection_headers(decision_id, warnings, allowed_quantity),
    )
