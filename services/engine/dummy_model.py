"""A random-weight XTTS built from coqui-tts's own classes, for tests and benchmarks.

It has the real architecture (GPT, perceiver, HiFi-GAN, speaker encoder) and a vocabulary the
project makes, so every code path runs as with the published checkpoint. It makes noise, not speech.
"""

from __future__ import annotations

import json
import logging
import string
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer
from tokenizers.models import BPE
from TTS.tts.configs.xtts_config import XttsArgs, XttsAudioConfig, XttsConfig
from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
from TTS.tts.models.xtts import Xtts

from services.engine.languages import XTTS_LANGUAGES as LANGUAGES

logger = logging.getLogger(__name__)

DummySize = Literal["tiny", "full"]

# Published XTTS v2 vocabulary size; the full dummy pads its vocabulary up to it.
V2_TEXT_TOKENS = 6681
BUILTIN_SPEAKERS = ["Dummy Alto", "Dummy Bass", "Dummy Tenor"]
_SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{lang}]" for lang in LANGUAGES]
# Characters left after coqui's cleaners: Latin with diacritics, Cyrillic, Arabic, Devanagari
# (Chinese, Japanese and Korean are romanised before tokenising).
_CHARACTERS = (
    string.ascii_lowercase
    + string.digits
    + string.punctuation
    + "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿąćęłńśźżčďěňřšťůžğışőű"
    + "".join(chr(c) for c in range(0x0430, 0x0450))  # Cyrillic lower case
    + "ё"
    + "".join(chr(c) for c in range(0x0621, 0x064B))  # Arabic letters
    + "".join(chr(c) for c in range(0x0900, 0x097F))  # Devanagari
)

_SIZES: dict[str, dict[str, int]] = {
    # 2 GPT layers at the real width: latents keep v2's shapes (32x1024, 512), loads in seconds.
    "tiny": {"gpt_layers": 2, "gpt_max_audio_tokens": 40},
    # Published v2 sizes (shared/reference/xtts_v2_config.json).
    "full": {"gpt_layers": 30, "gpt_max_audio_tokens": 605},
}


def write_dummy_vocab(path: Path, pad_to: int | None = None) -> None:
    """Write a character-level BPE vocabulary with XTTS's special tokens and all 17 language tags."""
    vocab = {token: index for index, token in enumerate(_SPECIAL_TOKENS)}
    for char in dict.fromkeys(_CHARACTERS):
        vocab.setdefault(char, len(vocab))
    while pad_to is not None and len(vocab) < pad_to:
        vocab[f"[UNUSED{len(vocab)}]"] = len(vocab)
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(_SPECIAL_TOKENS)
    tokenizer.save(str(path))


def dummy_config(size: DummySize) -> XttsConfig:
    """An XttsConfig with v2's published values and the layer count of the chosen size."""
    args = XttsArgs(
        gpt_max_text_tokens=402,
        gpt_max_prompt_tokens=70,
        gpt_n_model_channels=1024,
        gpt_n_heads=16,
        gpt_num_audio_tokens=1026,
        gpt_start_audio_token=1024,
        gpt_stop_audio_token=1025,
        gpt_use_masking_gt_prompt_approach=True,
        gpt_use_perceiver_resampler=True,
        **_SIZES[size],
    )
    return XttsConfig(
        model_args=args,
        audio=XttsAudioConfig(sample_rate=22050, output_sample_rate=24000),
        languages=list(LANGUAGES),
        temperature=0.75,
        length_penalty=1.0,
        repetition_penalty=5.0,
        top_k=50,
        top_p=0.85,
        gpt_cond_len=30,
        gpt_cond_chunk_len=4,
        max_ref_len=30,
    )


class _BuiltinSpeakers:
    """Stands in for coqui's SpeakerManager: name -> {gpt_cond_latent, speaker_embedding}."""

    def __init__(self, speakers: dict[str, dict[str, torch.Tensor]]) -> None:
        self.speakers = speakers


def build_dummy_xtts(size: DummySize, work_dir: Path, seed: int = 0) -> Xtts:
    """Build an XTTS of the real architecture with seeded random weights, ready for inference."""
    work_dir.mkdir(parents=True, exist_ok=True)
    vocab_path = work_dir / f"dummy_vocab_{size}.json"
    write_dummy_vocab(vocab_path, pad_to=V2_TEXT_TOKENS if size == "full" else None)
    config = dummy_config(size)
    config.model_args.tokenizer_file = str(vocab_path)
    (work_dir / f"dummy_config_{size}.json").write_text(json.dumps(config.to_dict(), default=str))

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the same dummy on every start, so saved voices stay comparable
    try:
        model = Xtts(config)
        model.tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab_path))
        model.init_models()
        model.gpt.init_gpt_for_inference(kv_cache=True)
        speakers = {}
        latent_dim = config.model_args.gpt_n_model_channels
        for name in BUILTIN_SPEAKERS:
            embedding = torch.randn(1, config.model_args.d_vector_dim, 1)
            speakers[name] = {
                "gpt_cond_latent": torch.randn(1, 32, latent_dim) * 0.5,
                "speaker_embedding": embedding / embedding.norm(dim=1, keepdim=True),
            }
        model.speaker_manager = _BuiltinSpeakers(speakers)
    finally:
        torch.random.set_rng_state(generator_state)
    model.eval()
    logger.warning("DUMMY_MODEL=%s: random weights, the server will make noise, not speech", size)
    return model
