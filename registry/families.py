"""Model families and their registered-model naming (see DESIGN.md)."""

from __future__ import annotations

import re
from enum import StrEnum

from registry.errors import InvalidModelNameError


class Family(StrEnum):
    CHRONOS = "chronos"
    FACTOR = "factor"
    SPECIALIST = "specialist"
    REGIME = "regime"
    VENUE_QUANTILES = "venue-quantiles"


SPECIALIST_ROLES = ("bull", "bear", "sideways", "universal")
REGIME_DETECTOR_NAME = "regime-detector"

_NAME_PATTERNS: dict[Family, re.Pattern[str]] = {
    Family.CHRONOS: re.compile(
        r"^chronos-(t5-(tiny|mini|small|base|large)|bolt-(tiny|mini|small|base)|2)$"
    ),
    Family.FACTOR: re.compile(r"^factor-[A-Za-z0-9][A-Za-z0-9_.-]*$"),
    Family.SPECIALIST: re.compile(rf"^specialist-({'|'.join(SPECIALIST_ROLES)})$"),
    Family.REGIME: re.compile(rf"^{REGIME_DETECTOR_NAME}$"),
    Family.VENUE_QUANTILES: re.compile(r"^venue-quantiles-[a-z0-9][a-z0-9-]*$"),
}


def family_of(name: str) -> Family:
    """The family a registered-model name belongs to, by its naming rule."""
    # venue-quantiles is checked before anything that could share a prefix.
    for family in (Family.VENUE_QUANTILES, *(f for f in Family if f is not Family.VENUE_QUANTILES)):
        if _NAME_PATTERNS[family].match(name):
            return family
    raise InvalidModelNameError(
        f"'{name}' matches no model family; expected chronos-t5-<size>, chronos-bolt-<size>, "
        "chronos-2, factor-<group>, specialist-<bull|bear|sideways|universal>, "
        "regime-detector or venue-quantiles-<venue>"
    )


def check_name(name: str, family: Family) -> None:
    """Raise unless ``name`` follows the naming rule of ``family``."""
    if not _NAME_PATTERNS[family].match(name):
        raise InvalidModelNameError(
            f"'{name}' is not a valid {family.value} model name "
            f"(pattern {_NAME_PATTERNS[family].pattern})"
        )


def specialist_name(role: str) -> str:
    if role not in SPECIALIST_ROLES:
        raise InvalidModelNameError(
            f"unknown specialist '{role}'; expected one of {', '.join(SPECIALIST_ROLES)}"
        )
    return f"specialist-{role}"


def venue_quantiles_name(venue: str) -> str:
    name = f"venue-quantiles-{venue}"
    check_name(name, Family.VENUE_QUANTILES)
    return name
