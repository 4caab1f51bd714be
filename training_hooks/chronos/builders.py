"""Random-weight Chronos models with the real architecture configs of each family.

They load through the same ``BaseChronosPipeline.from_pretrained`` path as the published
checkpoints and cost the same compute, so they stand in for real weights in tests, demos
and benchmarks. Their forecasts are meaningless: callers must tag such versions untrained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, PretrainedConfig, PreTrainedModel, T5Config

from training_hooks.chronos.validation import ChronosKind


@dataclass(frozen=True)
class Backbone:
    """Transformer shape; T5 and Bolt use ``num_layers`` for encoder and decoder alike."""

    d_model: int
    d_ff: int
    num_layers: int
    num_heads: int
    d_kv: int


_TEST = Backbone(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
_TINY = Backbone(d_model=256, d_ff=1024, num_layers=4, num_heads=4, d_kv=64)
_MINI = Backbone(d_model=384, d_ff=1536, num_layers=4, num_heads=8, d_kv=64)
_SMALL = Backbone(d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64)
_BASE = Backbone(d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64)
_LARGE = Backbone(d_model=1024, d_ff=4096, num_layers=24, num_heads=16, d_kv=64)

# kind -> size -> backbone. Published parameter counts: T5 8M/20M/46M/200M/710M,
# Bolt 9M/21M/48M/205M, Chronos-2 120M (base) and 28M (autogluon/chronos-2-small).
SIZES: dict[ChronosKind, dict[str, Backbone]] = {
    "t5": {
        "test": _TEST,
        "tiny": _TINY,
        "mini": _MINI,
        "small": _SMALL,
        "base": _BASE,
        "large": _LARGE,
    },
    "bolt": {"test": _TEST, "tiny": _TINY, "mini": _MINI, "small": _SMALL, "base": _BASE},
    "chronos2": {"test": _TEST, "small": _SMALL, "base": _BASE},
}

T5_N_TOKENS = 4096
BOLT_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
CHRONOS2_QUANTILES = [0.01, 0.05, *(round(0.1 + 0.05 * i, 2) for i in range(17)), 0.95, 0.99]

# Settings shared by every released Chronos config (T5-efficient style blocks).
_COMMON: dict[str, Any] = {
    "feed_forward_proj": "relu",
    "dropout_rate": 0.1,
    "initializer_factor": 0.05,
    "layer_norm_epsilon": 1e-6,
    "pad_token_id": 0,
}


def backbone(kind: ChronosKind, size: str) -> Backbone:
    """The backbone of ``kind`` at ``size``; ValueError names the sizes that exist."""
    sizes = SIZES.get(kind)
    if sizes is None:
        raise ValueError(f"unknown Chronos kind '{kind}'; expected one of {', '.join(SIZES)}")
    if size not in sizes:
        raise ValueError(f"no '{size}' size for chronos {kind}; expected one of {', '.join(sizes)}")
    return sizes[size]


def build_random_chronos(kind: ChronosKind, size: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a random-weight ``kind`` model of ``size`` to ``out_dir`` (safetensors + config).

    Deterministic for a given ``seed``; the global torch RNG is left as it was.
    """
    shape = backbone(kind, size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _BUILDERS[kind](shape)
    model.save_pretrained(out_dir)
    return out_dir


def _t5_model(shape: Backbone) -> PreTrainedModel:
    from transformers import T5ForConditionalGeneration

    chronos_config = {
        "tokenizer_class": "MeanScaleUniformBins",
        "tokenizer_kwargs": {"low_limit": -15.0, "high_limit": 15.0},
        "n_tokens": T5_N_TOKENS,
        "n_special_tokens": 2,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "use_eos_token": True,
        "model_type": "seq2seq",
        "context_length": 512,
        "prediction_length": 64,
        "num_samples": 20,
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
    }
    config = T5Config(
        **asdict(shape),
        **_COMMON,
        num_decoder_layers=shape.num_layers,
        vocab_size=T5_N_TOKENS,
        eos_token_id=1,
        decoder_start_token_id=0,
        chronos_config=chronos_config,
    )
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=0, eos_token_id=1, pad_token_id=0
    )
    return model


def _bolt_model(shape: Backbone) -> PreTrainedModel:
    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    chronos_config = {
        "context_length": 2048,
        "prediction_length": 64,
        "input_patch_size": 16,
        "input_patch_stride": 16,
        "quantiles": BOLT_QUANTILES,
        "use_reg_token": True,
    }
    config = T5Config(
        **asdict(shape),
        **_COMMON,
        num_decoder_layers=shape.num_layers,
        eos_token_id=1,
        decoder_start_token_id=0,
        chronos_pipeline_class="ChronosBoltPipeline",
        chronos_config=chronos_config,
    )
    return ChronosBoltModelForForecasting(config)


def _chronos2_model(shape: Backbone) -> PreTrainedModel:
    from chronos.chronos2 import Chronos2Model
    from chronos.chronos2.config import Chronos2CoreConfig

    chronos_config = {
        "context_length": 8192,
        "input_patch_size": 16,
        "input_patch_stride": 16,
        "output_patch_size": 16,
        "max_output_patches": 64,
        "quantiles": CHRONOS2_QUANTILES,
        "use_reg_token": True,
        "use_arcsinh": True,
        "time_encoding_scale": 8192,
    }
    config: PretrainedConfig = Chronos2CoreConfig(
        **asdict(shape),
        **_COMMON,
        chronos_pipeline_class="Chronos2Pipeline",
        chronos_config=chronos_config,
    )
    return Chronos2Model(config)


_BUILDERS = {"t5": _t5_model, "bolt": _bolt_model, "chronos2": _chronos2_model}
