"""The shared voices folder (services/shared_folder.py): atomic writes, versions, and a start-up cleanup that never
deletes a live writer's file, whether it writes a voice or the client settings; one test with two real processes."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.queues import Queue
from pathlib import Path

import pytest
import torch

from main import XTTS_API_SETTINGS_FILE
from services.client_settings import ClientSettingsFile
from services.shared_folder import SharedFolder, is_leftover, temp_prefix
from services.voice_store import VoiceStore
from tests.shared_folder_servers import ROUNDS, restart_repeatedly, save_in_a_loop, small_latents, start_up


def test_writes_replace_or_refuse_and_change_the_version(tmp_path: Path) -> None:
    folder = SharedFolder(tmp_path / "voices")
    assert folder.names(".json") == [] and folder.version("a.json") is None  # no folder yet: nothing, no error
    first = folder.write("a.json", b"one", replace=False)
    with pytest.raises(FileExistsError):
        folder.write("a.json", b"two", replace=False)
    second = folder.write("a.json", b"three", replace=True)
    assert first != second == folder.version("a.json") and folder.read("a.json") == (b"three", second)
    assert folder.names(".json") == ["a.json"] and os.listdir(folder.root) == ["a.json"]  # no temporary file left
    for name in ("../a.json", "", "..", "a/b", ".tmp-1@host~x"):
        with pytest.raises(ValueError):
            folder.write(name, b"x", replace=True)


def test_temporary_files_are_leftovers_only_when_their_writer_is_gone_or_they_are_old() -> None:
    mine = f"{temp_prefix()}abc"
    assert not is_leftover(mine, age_s=1) and is_leftover(mine, age_s=301)
    assert is_leftover(".tmp-settings-abc", age_s=0)  # an older version's settings write names no writer
    assert not is_leftover(".tmp-1@another-host~abc", age_s=299)  # another machine's pid 1 is not ours to ask about
    assert is_leftover(".tmp-1@another-host~abc", age_s=300)


def test_a_replica_starting_mid_write_keeps_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of issue 20, in one process: a server starts (and cleans up) while a settings change and a voice
    save sit between writing their temporary file and renaming it."""
    settings = ClientSettingsFile(tmp_path / XTTS_API_SETTINGS_FILE)
    store = VoiceStore(tmp_path, 1024, 512)
    removed: list[int] = []
    fsync = os.fsync

    def fsync_while_a_replica_starts(descriptor: int) -> None:
        removed.append(start_up(tmp_path / XTTS_API_SETTINGS_FILE))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_while_a_replica_starts)
    settings.update(None, {"temperature": 0.5})
    store.save("saved", small_latents(1), "Saved", "", overwrite=False)
    monkeypatch.undo()
    assert removed and sum(removed) == 0
    assert ClientSettingsFile(tmp_path / XTTS_API_SETTINGS_FILE).read(None) == {"temperature": 0.5}
    assert store.load("saved")[0].name == "Saved"


# live: two real processes racing on the folder (each starts Python and torch; their interleaving is timing); the
# same race, made deterministic in-process, is the test above
@pytest.mark.live
def test_a_server_restarting_beside_one_that_saves_loses_nothing(tmp_path: Path) -> None:
    settings_file = tmp_path / XTTS_API_SETTINGS_FILE
    spawn = multiprocessing.get_context("spawn")  # real, fresh processes, as replicas are
    cleaning, writing, done = spawn.Event(), spawn.Event(), spawn.Event()
    failures: Queue[list[str]] = spawn.Queue()
    restarts: Queue[int] = spawn.Queue()
    writer = spawn.Process(target=save_in_a_loop, args=(settings_file, cleaning, writing, failures))
    restarter = spawn.Process(target=restart_repeatedly, args=(settings_file, cleaning, writing, done, restarts))
    writer.start()
    restarter.start()
    try:
        errors = failures.get(timeout=60)
    finally:
        done.set()
        writer.join(30)
        restarter.join(30)
    assert errors == []
    assert restarts.get(timeout=5) > ROUNDS  # it kept restarting while the writer wrote
    assert (writer.exitcode, restarter.exitcode) == (0, 0)
    store = VoiceStore(tmp_path, 1024, 512)
    for index in range(ROUNDS):
        record, latents = store.load(f"voice-{index}")
        assert record.name == f"Voice {index}"
        assert torch.equal(latents.gpt_cond_latent, small_latents(index).gpt_cond_latent)
    assert store.load("overwritten")[0].name == f"Round {ROUNDS - 1}"
    assert ClientSettingsFile(settings_file).read(None) == {"round": ROUNDS - 1}
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]
