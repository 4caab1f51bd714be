"""Baseline (a): a one-request-per-model-call Chronos server, the seed systems' design.

A minimal FastAPI app served by uvicorn (1 process). At start-up it loads the registered
version through ``registry.loading.load_version`` (the same artefact and runtime the
services use); each ``POST /forecast`` calls ``ChronosRuntime.forecast`` on that request's
series only, in a thread pool: no batching across requests. Request and response bodies
follow ChronosForecaster's ``/forecast`` (inputs/parameters in, predictions with mean and
quantile keys out), so one load generator drives both.

``--calls`` model calls run at once (default 1, as the seed server, whose endpoint calls the
model on its event loop; 40 is FastAPI's thread pool for a plain ``def`` endpoint);
``--torch-threads`` sets torch's intra-op threads (default: torch's, one per core).

    .venv/bin/python -m bench.chronos_single_server --port 8123 [--model chronos-bolt-small]
        [--calls 1] [--torch-threads N]

Needs ``TRADESERVE_HOME`` (or MLflow URIs) pointing at the registry.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

DEFAULT_MODEL = "chronos-bolt-small"


class SeriesIn(BaseModel):
    target: list[float | None]
    item_id: str | None = None


class ParametersIn(BaseModel):
    prediction_length: int = Field(default=1, ge=1)
    quantile_levels: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])


class ForecastIn(BaseModel):
    inputs: list[SeriesIn]
    parameters: ParametersIn = Field(default_factory=ParametersIn)


def create_app(model: str, calls: int = 1) -> FastAPI:
    state: dict[str, Any] = {}
    limiter = anyio.CapacityLimiter(calls)  # model calls at once, one request each

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from registry.loading import load_version
        from registry.resolve import resolve

        resolved = resolve(model)
        loaded = load_version(resolved)
        state["runtime"] = loaded.runtime
        state["model"] = {"name": model, "version": resolved.version, "alias": resolved.alias}
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        if "runtime" not in state:
            raise HTTPException(503, "loading")
        return {"status": "ready"}

    @app.post("/forecast")
    async def forecast(request: ForecastIn) -> dict[str, Any]:
        if len(request.inputs) != 1:
            raise HTTPException(422, "this baseline forecasts exactly one series per request")
        series = [
            np.asarray(
                [math.nan if value is None else value for value in request.inputs[0].target],
                dtype=np.float64,
            )
        ]
        parameters = request.parameters
        batch = await anyio.to_thread.run_sync(
            lambda: state["runtime"].forecast(
                series, parameters.prediction_length, parameters.quantile_levels
            ),
            limiter=limiter,
        )
        return {
            "predictions": [{"item_id": request.inputs[0].item_id, **batch.row(0)}],
            "model": state["model"],
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chronos_single_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--calls", type=int, default=1, help="model calls at once")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    uvicorn.run(
        create_app(args.model, args.calls),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
