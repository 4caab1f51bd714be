"""Lists in environment variables, parsed one way by every settings class: names (a JSON
list or comma-separated) and folders (``os.pathsep``-separated, resolved)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import NoDecode


def split_names(value: object) -> object:
    """``'["a", "b"]'`` or ``"a, b"`` → ``["a", "b"]``; blank → None (the default)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        return json.loads(text)
    return [name.strip() for name in text.split(",") if name.strip()]


def split_paths(value: object) -> object:
    """``"/a:/b"`` → ``[Path("/a"), Path("/b")]``, user-expanded and absolute."""
    if isinstance(value, str):
        return [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part]
    return value


NameList = Annotated[list[str], NoDecode, BeforeValidator(split_names)]
# Blank or unset: None, the setting's "every one" default.
OptionalNameList = Annotated[list[str] | None, NoDecode, BeforeValidator(split_names)]
PathList = Annotated[list[Path], NoDecode, BeforeValidator(split_paths)]
