"""Start-up: configuration errors, no silent fallback, and loading a checkpoint folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cluster.settings import ClusterSettings
from config import Settings
from main import batch_limits
from services.engine.dummy_model import build_dummy_xtts, dummy_config
from services.engine.model_loader import ModelChoice, load_model
from services.errors import ModelUnavailable
from tests.audio_checks import assert_pcm_wav
from tests.conftest import REPO, Server, free_port, start_server


def run_server_briefly(env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in Settings.model_fields}
    clean.pop("COQUI_TOS_AGREED", None)
    return subprocess.run(
        [sys.executable, "run.py"], cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=timeout_s
    )


def test_a_bad_setting_stops_start_up_with_one_line_naming_it() -> None:
    result = run_server_briefly({"PORT": "not-a-port", "DUMMY_MODEL": "tiny"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PORT" in lines[0] and "not-a-port" in lines[0]
    result = run_server_briefly({"DUMMY_MODEL": "huge", "MAX_CONCURRENT_REQUESTS": "0"})
    assert result.returncode == 2 and "DUMMY_MODEL" in result.stderr and "MAX_CONCURRENT_REQUESTS" in result.stderr


def test_without_a_model_start_up_fails_naming_the_three_ways_out(tmp_path: Path) -> None:
    result = run_server_briefly(
        {
            "HOME": str(tmp_path),
            "XDG_DATA_HOME": str(tmp_path),
            "PORT": str(free_port()),
            "VOICES_DIR": str(tmp_path / "v"),
        }
    )
    assert result.returncode == 1, result.stderr[-2000:]
    message = result.stderr
    assert "CUSTOM_MODEL_PATH" in message and "COQUI_TOS_AGREED=1" in message and "DUMMY_MODEL" in message


def test_a_checkpoint_folder_loads_through_coquis_loader(tmp_path: Path) -> None:
    """CUSTOM_MODEL_PATH: config.json, model.pth, vocab.json and speakers_xtts.pth, as XTTS v2 ships them."""
    source = build_dummy_xtts("tiny", tmp_path / "build")
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    config = dummy_config("tiny")
    config.model_args.tokenizer_file = ""
    config.save_json(str(folder / "config.json"))
    (folder / "vocab.json").write_bytes((tmp_path / "build" / "dummy_vocab_tiny.json").read_bytes())
    torch.save({"model": source.state_dict()}, folder / "model.pth")
    torch.save(source.speaker_manager.speakers, folder / "speakers_xtts.pth")
    loaded = load_model(ModelChoice(checkpoint_dir=folder, num_threads=2))
    assert loaded.source == f"custom:{folder}" and not loaded.dummy
    assert set(loaded.model.speaker_manager.speakers) == set(source.speaker_manager.speakers)
    for name, parameter in source.gpt.gpt.named_parameters():
        assert torch.equal(parameter, dict(loaded.model.gpt.gpt.named_parameters())[name])


def test_missing_checkpoint_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ModelUnavailable) as missing:
        load_model(ModelChoice(checkpoint_dir=tmp_path))
    assert "config.json" in str(missing.value) and "model.pth" in str(missing.value)
    assert "vocab.json" not in str(missing.value).split(";")[0]


def test_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    names = [*Settings.model_fields, *ClusterSettings.model_fields]
    missing = [name for name in names if f"| `{name}` |" not in readme]
    assert missing == [], f"README's configuration table lacks {missing}"


def test_the_batch_size_follows_the_admitted_requests_within_the_devices_cap() -> None:
    def limits(**values: object) -> tuple[int, float]:
        chosen = batch_limits(Settings(_env_file=None, USE_CPU=True, **values))  # type: ignore[call-arg]
        return chosen.max_batch_size, chosen.buffer_seconds

    assert limits() == (8, 10.0)  # MAX_CONCURRENT_REQUESTS=10, capped at 8 on a CPU
    assert limits(MAX_CONCURRENT_REQUESTS=3) == (3, 10.0)
    assert limits(MAX_BATCH_SIZE=12, STREAM_BUFFER_SECONDS=2.5) == (12, 2.5)


def test_start_up_logs_no_truncation_warning(server: Server) -> None:
    """The warm-up text packs under coqui's per-language character limit, so nothing warns at every start; the
    random weights of DUMMY_MODEL are warned about."""
    log = server.log()
    assert "warm-up generation took" in log
    assert "character limit" not in log
    assert "noise, not speech" in log or "noise not speech" in log  # DUMMY_MODEL's random weights are said at start-up


def test_default_settings_run_the_fast_cpu_paths(tmp_path: Path) -> None:
    """`python run.py` as a new user starts it: GPT_PRECISION, VOCODER_BACKEND and VOCODER_PRECISION on auto pick
    int8 and OpenVINO on a CPU, say so in /health and the log, and speak."""
    server = start_server(tmp_path, GPT_PRECISION="auto", VOCODER_BACKEND="auto", VOCODER_PRECISION="auto")
    try:
        with server.client() as client:
            model = client.get("/health").json()["model"]
            assert model["gpt_precision"] == "int8" and model["gpt_precision_reason"].startswith("auto on the CPU")
            assert model["vocoder_backend"] == "openvino" and model["vocoder_reason"].startswith("auto")
            assert model["gpt_kernels"] == "torch-rowwise-int8" and model["gpt_kernels_reason"]
            assert model["vocoder_precision"] in ("bfloat16", "float32")
            body = {"text": "Hello there.", "language": "en", "speaker_id": "Dummy Alto", "seed": 3}
            response = client.post("/tts_stream", json=body)
        assert response.status_code == 200
        assert_pcm_wav(response.content)  # 24 kHz, 16-bit, mono, not silent
        assert "vocoder: openvino" in server.log()
    finally:
        server.stop()
