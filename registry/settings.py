"""Typed settings for tradeserve, read from the environment (prefix ``TRADESERVE_``).

The registry location follows MLflow's own variables (``MLFLOW_TRACKING_URI``,
``MLFLOW_REGISTRY_URI``); without them tradeserve uses its embedded default: SQLite and a
local artifact folder inside ``TRADESERVE_HOME``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.env_lists import PathList


class Settings(BaseSettings):
    """Where tradeserve keeps its state and how it talks to the registry."""

    model_config = SettingsConfigDict(env_prefix="TRADESERVE_", extra="ignore")

    home: Path = Field(
        default=Path(".tradeserve"),
        description="Project data folder: embedded MLflow store, demo market data, state.",
    )
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "TRADESERVE_TRACKING_URI"),
        description="MLflow tracking server; unset means SQLite inside TRADESERVE_HOME.",
    )
    registry_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_REGISTRY_URI", "TRADESERVE_REGISTRY_URI"),
        description="MLflow registry URI when it differs from the tracking URI.",
    )
    alias: str = Field(default="champion", description="Alias that marks the promoted version.")
    legacy_stage: str = Field(
        default="Production", description="Stage mirrored on promotion for stage-based clients."
    )
    experiment: str = Field(
        default="tradeserve", description="MLflow experiment for training runs."
    )
    actor: str | None = Field(
        default=None, description="Name recorded in promotion audit entries (default: OS user)."
    )
    trusted_pickle_dirs: PathList = Field(
        default_factory=list,
        description="Directories whose pickles tradeserve may read (model_manager .pkl files), "
        "os.pathsep-separated; pickles anywhere else are refused.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def embedded_tracking_uri(self) -> str:
        """The SQLite store inside TRADESERVE_HOME."""
        return f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def embedded(self) -> bool:
        """True when no tracking server is configured and the SQLite store is used.

        ``configure()`` exports the embedded URI as MLFLOW_TRACKING_URI (``mlflow`` does that),
        so settings read again later in this process, or in a child process, see it set: it
        still means the embedded store, whose artifacts belong in TRADESERVE_HOME.
        """
        return not self.tracking_uri or self.tracking_uri == self.embedded_tracking_uri

    @property
    def effective_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return self.embedded_tracking_uri

    @property
    def artifact_root(self) -> str | None:
        """Artifact location for new experiments; None lets a tracking server decide."""
        if self.embedded:
            return (self.home_dir / "mlartifacts").as_uri()
        return None

    @property
    def market_data_dir(self) -> Path:
        return self.home_dir / "market_data"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (environment is read once)."""
    return Settings()
