"""Where the one XTTS model comes from: a checkpoint folder, coqui's model manager, or a dummy."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from TTS.tts.configs.xtts_config import XttsConfig
from TTS.tts.models.xtts import Xtts

from services.engine.gpt_kernels import GptKernel
from services.engine.hardware import auto_gpt_precision, cpu_features
from services.engine.precision import GptPrecision, VocoderPrecision, apply_gpt_precision, apply_vocoder_precision
from services.engine.vocoder import fold_weight_norm, use_waveform_decoder
from services.engine.vocoder_backends import VocoderBackend, VocoderChoice, choose_vocoder, convert_waveform_decoder
from services.errors import ModelUnavailable

logger = logging.getLogger(__name__)

XTTS_V2_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
WAYS_OUT = (
    "set CUSTOM_MODEL_PATH to an XTTS checkpoint folder (config.json, model.pth, vocab.json), "
    "or set COQUI_TOS_AGREED=1 to accept the Coqui Public Model License (https://coqui.ai/cpml) and let "
    "coqui-tts download XTTS v2 (needs network), or set DUMMY_MODEL=tiny|full for random weights (noise, not speech)"
)


@dataclass(frozen=True)
class ModelChoice:
    """Which model to load and where to run it (from DUMMY_MODEL, CUSTOM_MODEL_PATH, USE_CPU, NUM_THREADS)."""

    dummy: Literal["tiny", "full"] | None = None
    checkpoint_dir: Path | None = None
    use_cpu: bool = False
    num_threads: int = 1
    gpt_precision: GptPrecision | Literal["auto"] = "float32"
    vocoder_precision: VocoderPrecision | Literal["auto"] = "float32"
    vocoder_backend: VocoderBackend | Literal["auto"] = "torch"
    """The server's settings default both to auto; here the default is the reference path (torch float32)."""


@dataclass
class LoadedModel:
    """The model and what /health reports about it."""

    model: Xtts
    source: str
    dummy: bool
    device: torch.device
    load_seconds: float
    gpt_precision: GptPrecision = "float32"
    vocoder_precision: VocoderPrecision = "float32"
    gpt_precision_reason: str = "set"
    """Why the GPT runs in its precision: `set` (GPT_PRECISION named it) or what `auto` saw."""
    cpu: str = ""
    """The processor and the flags that decide its kernels (hardware.CpuFeatures.summary)."""
    vocoder_backend: VocoderBackend = "torch"
    vocoder_reason: str = "set"
    """Why the vocoder runs on its backend and in its precision: `set`, or what `auto` saw."""
    gpt_kernels: GptKernel = "torch-float32"
    """What runs the GPT blocks' linear layers (gpt_kernels.GptKernel), e.g. `openvino-int8`."""
    gpt_kernels_reason: str = ""
    """Why those kernels (for int8: what the CPU and the installed runtimes offer)."""


def pick_device(use_cpu: bool) -> torch.device:
    """The GPU when there is one and USE_CPU is off, else the CPU."""
    if not use_cpu and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _load_checkpoint_dir(checkpoint_dir: Path) -> Xtts:
    missing = [name for name in ("config.json", "model.pth", "vocab.json") if not (checkpoint_dir / name).is_file()]
    if missing:
        raise ModelUnavailable(f"CUSTOM_MODEL_PATH={checkpoint_dir} lacks {', '.join(missing)}; {WAYS_OUT}")
    config = XttsConfig()
    config.load_json(str(checkpoint_dir / "config.json"))
    model = Xtts.init_from_config(config)
    model.load_checkpoint(config, checkpoint_dir=str(checkpoint_dir), eval=True)
    return model


def _download_v2() -> Path:
    from TTS.utils.manage import ModelManager

    manager = ModelManager(progress_bar=False)
    agreed_file = manager.output_prefix / XTTS_V2_NAME.replace("/", "--") / "tos_agreed.txt"
    if os.environ.get("COQUI_TOS_AGREED") != "1" and not agreed_file.exists():
        raise ModelUnavailable(f"XTTS v2's licence has not been agreed to; {WAYS_OUT}")
    try:
        model_path, _config_path, _item = manager.download_model(XTTS_V2_NAME)
    except Exception as error:  # network, hub or disk: all mean "no model", said once
        raise ModelUnavailable(
            f"could not download XTTS v2 ({error.__class__.__name__}: {error}); {WAYS_OUT}"
        ) from error
    return model_path if model_path.is_dir() else model_path.parent


def load_model(choice: ModelChoice) -> LoadedModel:
    """Load the configured model on its device, ready for inference. Raises ModelUnavailable."""
    started = time.perf_counter()
    torch.set_num_threads(choice.num_threads)
    device = pick_device(choice.use_cpu)
    gpt_precision, gpt_reason = (
        auto_gpt_precision(device, cpu_features()) if choice.gpt_precision == "auto" else (choice.gpt_precision, "set")
    )
    if gpt_precision == "float16" and device.type == "cpu":
        # CPUs without native fp16 arithmetic run it many times slower than float32
        raise ModelUnavailable("GPT_PRECISION=float16 is for GPUs; on the CPU use bfloat16 or int8")
    if choice.dummy:
        from services.engine.dummy_model import build_dummy_xtts

        model = build_dummy_xtts(choice.dummy, Path(tempfile.gettempdir()) / "xtts-dummy")
        source = f"dummy:{choice.dummy}"
    elif choice.checkpoint_dir is not None:
        model = _load_checkpoint_dir(choice.checkpoint_dir)
        source = f"custom:{choice.checkpoint_dir}"
    else:
        checkpoint_dir = _download_v2()
        model = _load_checkpoint_dir(checkpoint_dir)
        source = f"coqui:{XTTS_V2_NAME}"
    folded = fold_weight_norm(model.hifigan_decoder)
    model.to(device)
    model.eval()
    try:
        kernels = apply_gpt_precision(model.gpt, gpt_precision, device)
    except ValueError as error:
        raise ModelUnavailable(str(error)) from error
    vocoder = _load_vocoder(model, choice, device)
    logger.info(
        "folded weight norm into %d vocoder layers; GPT in %s, vocoder: %s (%s)",
        folded, gpt_precision, vocoder.label, vocoder.reason,
    )  # fmt: skip
    if gpt_reason != "set":
        logger.info("GPT precision %s: %s", gpt_precision, gpt_reason)
    logger.info("GPT kernels %s: %s", kernels.kernel, kernels.reason)
    return LoadedModel(
        model=model,
        source=source,
        dummy=bool(choice.dummy),
        device=device,
        load_seconds=time.perf_counter() - started,
        gpt_precision=gpt_precision,
        vocoder_precision=vocoder.precision,
        gpt_precision_reason=gpt_reason,
        cpu=cpu_features().summary,
        vocoder_backend=vocoder.backend,
        vocoder_reason=vocoder.reason,
        gpt_kernels=kernels.kernel,
        gpt_kernels_reason=kernels.reason,
    )


def _load_vocoder(model: Xtts, choice: ModelChoice, device: torch.device) -> VocoderChoice:
    """Resolve VOCODER_BACKEND / VOCODER_PRECISION and set the vocoder up for them. Raises ModelUnavailable."""
    try:
        vocoder = choose_vocoder(choice.vocoder_backend, choice.vocoder_precision, device, cpu_features())
    except ValueError as error:
        raise ModelUnavailable(str(error)) from error
    decoder = model.hifigan_decoder
    if vocoder.backend == "openvino":
        try:
            waveform = convert_waveform_decoder(decoder, vocoder.precision, torch.get_num_threads())
        except Exception as error:  # an engine that cannot take this model: say so, and run torch when allowed
            if choice.vocoder_backend == "openvino":
                raise ModelUnavailable(f"VOCODER_BACKEND=openvino: conversion failed ({error})") from error
            logger.warning("OpenVINO could not convert the vocoder (%s); it runs in torch", error)
            vocoder = VocoderChoice("torch", vocoder.precision, vocoder.reason + "; OpenVINO failed, torch")
        else:
            use_waveform_decoder(decoder, waveform)
            return vocoder
    apply_vocoder_precision(decoder, vocoder.precision)
    return vocoder
