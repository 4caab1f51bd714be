"""What the seed's clients rely on: specialist names and the 403 risk rejection."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from registry.families import SPECIALIST_ROLES

SEED_SUFFIX = "_specialist"
REJECTED = "Trade rejected by risk manager"


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


def rejection_response(
    decision_id: str, warnings: list[str], allowed_quantity: int, rejections: list[dict]
) -> JSONResponse:
    """The seed's ``403 Trade rejected by risk manager`` with ``X-Risk-Warnings``; the body
    also names the (logged) decision and the largest allowed quantity."""
    header = ",".join(warning.replace(",", ";") for warning in warnings)
    return JSONResponse(
        {
            "detail": REJECTED,
            "decision_id": decision_id,
            "allowed_quantity": allowed_quantity,
            "rejections": rejections,
        },
        status_code=403,
        headers={"X-Risk-Warnings": header.encode("latin-1", "replace").decode("latin-1")},
    )
