"""Two servers on one voices folder, as separate processes for tests/test_shared_folder.py: one saves while the
other restarts. A module of its own, light to import: each spawned process imports it (not main.py)."""

from __future__ import annotations

import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import torch

from services.client_settings import ClientSettingsFile
from services.engine.latents import VoiceLatents
from services.voice_store import VoiceStore

ROUNDS = 60  # the writer's rounds: about a second here; a careless cleanup fails one within the first few


def small_latents(seed: int) -> VoiceLatents:
    generator = torch.Generator().manual_seed(seed)
    return VoiceLatents(torch.randn(1, 2, 1024, generator=generator), torch.randn(1, 512, 1, generator=generator))


def start_up(settings_file: Path) -> int:
    """What a server does with the folder when it starts (main.py's lifespan): open the client settings, open the
    voice store and remove leftovers; returns how many it removed."""
    ClientSettingsFile(settings_file).read(None)
    return VoiceStore(settings_file.parent, 1024, 512).remove_leftovers()


def save_in_a_loop(settings_file: Path, cleaning: Event, writing: Event, failures: Queue[list[str]]) -> None:
    """One server: changes the client settings and saves voices, round after round; puts every error it met."""
    settings = ClientSettingsFile(settings_file)
    store = VoiceStore(settings_file.parent, 1024, 512)
    errors = []
    cleaning.wait(30)  # the other server is restarting by now
    writing.set()
    for index in range(ROUNDS):
        try:
            settings.update(None, {"round": index})
            store.save(f"voice-{index}", small_latents(index), f"Voice {index}", "", overwrite=False)
            store.save("overwritten", small_latents(index), f"Round {index}", "", overwrite=True)
        except Exception as error:  # the test reports every one
            errors.append(f"round {index}: {error!r}")
    failures.put(errors)


def restart_repeatedly(settings_file: Path, cleaning: Event, writing: Event, done: Event, restarts: Queue[int]) -> None:
    """The other server, starting again and again until the writer is done (30 s at most); puts how often it
    started while the writer wrote."""
    count = 0
    deadline = time.monotonic() + 30
    while not done.is_set() and time.monotonic() < deadline:
        start_up(settings_file)
        cleaning.set()
        count += writing.is_set()
    restarts.put(count)
