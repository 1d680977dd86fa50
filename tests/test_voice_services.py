"""The cache, the voice store and the voice service, without HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from services.cache import SpeakerCache
from services.engine.latents import VoiceLatents
from services.errors import InvalidVoiceId, VoiceExists, VoiceNotFound, VoiceUnreadable
from services.voice_store import VoiceStore
from services.voices import VoiceService
from tests.conftest import app_client, app_settings
from tests.fakes import FakeEngine, fake_latents


def latents(seed: int = 0) -> VoiceLatents:
    generator = torch.Generator().manual_seed(seed)
    return VoiceLatents(torch.randn(1, 32, 1024, generator=generator), torch.randn(1, 512, 1, generator=generator))


def test_twenty_concurrent_misses_load_once() -> None:
    cache = SpeakerCache(max_size=10, ttl_s=60)
    loads = 0

    async def load() -> VoiceLatents:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return latents()

    async def main() -> list[VoiceLatents]:
        return await asyncio.gather(*(cache.get_or_load("voice", load) for _ in range(20)))

    results = asyncio.run(main())
    assert loads == 1
    assert all(result is results[0] for result in results)
    stats = cache.stats()
    assert (stats.misses, stats.hits, stats.size) == (1, 19, 1)


def test_a_failed_load_is_not_cached_and_reaches_every_waiter() -> None:
    cache = SpeakerCache(max_size=10, ttl_s=60)

    async def load() -> VoiceLatents:
        await asyncio.sleep(0.01)
        raise VoiceNotFound("gone")

    async def main() -> list[object]:
        return await asyncio.gather(*(cache.get_or_load("x", load) for _ in range(5)), return_exceptions=True)

    assert all(isinstance(result, VoiceNotFound) for result in asyncio.run(main()))
    assert cache.stats().size == 0


def test_cache_evicts_least_recently_used_and_expired_and_counts_them() -> None:
    now = [0.0]
    cache = SpeakerCache(max_size=2, ttl_s=10, timer=lambda: now[0])

    async def fill(key: str) -> None:
        async def load() -> VoiceLatents:
            return latents()

        await cache.get_or_load(key, load)

    async def main() -> None:
        for key in ("a", "b", "c"):
            await fill(key)

    asyncio.run(main())
    assert cache.stats().evictions == 1 and cache.stats().size == 2
    now[0] = 100.0
    assert cache.stats().size == 0 and cache.stats().evictions == 3


def test_invalidate_during_a_load_keeps_the_stale_result_out() -> None:
    cache = SpeakerCache(max_size=10, ttl_s=60)

    async def main() -> None:
        async def load() -> VoiceLatents:
            await asyncio.sleep(0.05)
            return latents()

        task = asyncio.create_task(cache.get_or_load("v", load))
        await asyncio.sleep(0.01)
        cache.invalidate("v")
        await task

    asyncio.run(main())
    assert cache.stats().size == 0


def test_store_writes_atomically_and_refuses_overwrite(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, 1024, 512)
    store.save("voice_1", latents(1), "One", "first", overwrite=False)
    with pytest.raises(VoiceExists):
        store.save("voice_1", latents(2), "Two", "", overwrite=False)
    store.save("voice_1", latents(3), "Three", "", overwrite=True)
    record, loaded = store.load("voice_1")
    assert record.name == "Three"
    assert torch.equal(loaded.gpt_cond_latent, latents(3).gpt_cond_latent)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["voice_1.safetensors"]


@pytest.mark.parametrize("voice_id", ["../x", "", "a/b", "x" * 65, "ä", "a\0", ".hidden"])
def test_store_refuses_ids_before_building_a_path(tmp_path: Path, voice_id: str) -> None:
    store = VoiceStore(tmp_path / "voices", 1024, 512)
    with pytest.raises(InvalidVoiceId):
        store.save(voice_id, latents(), "x", "", overwrite=True)
    assert list(tmp_path.rglob("*.safetensors")) == []


def test_saved_voice_shadows_a_builtin_of_the_same_name_until_deleted(tmp_path: Path) -> None:
    engine = FakeEngine()
    builtin = engine.builtin_speakers["narrator"]
    service = VoiceService(engine, VoiceStore(tmp_path, 1024, 512), SpeakerCache(10, 60))

    async def main() -> None:
        assert await service.resolve("narrator") is builtin
        await service.save("narrator", latents(5), "My narrator", "", overwrite=False)
        shadowing = await service.resolve("narrator")
        assert torch.equal(shadowing.gpt_cond_latent, latents(5).gpt_cond_latent)
        assert await service.resolve("Dummy Alto") is engine.builtin_speakers["Dummy Alto"]  # not an id: built-in
        await service.delete("narrator")
        assert await service.resolve("narrator") is builtin

    asyncio.run(main())


def test_concurrent_resolves_of_a_saved_voice_load_it_once(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, 1024, 512)
    loads = 0
    original_load = store.load

    def counting_load(voice_id: str):  # type: ignore[no-untyped-def]
        nonlocal loads
        loads += 1
        return original_load(voice_id)

    store.load = counting_load  # type: ignore[method-assign]
    service = VoiceService(FakeEngine(), store, SpeakerCache(10, 60))

    async def main() -> None:
        await service.save("saved-one", latents(5), "Saved", "", overwrite=False)
        resolved = await asyncio.gather(*(service.resolve("saved-one") for _ in range(20)))
        assert loads == 1
        assert torch.equal(resolved[0].gpt_cond_latent, latents(5).gpt_cond_latent)
        with pytest.raises(VoiceNotFound):
            await service.resolve("no-such-voice")
        await service.delete("saved-one")
        with pytest.raises(VoiceNotFound):
            await service.resolve("saved-one")

    asyncio.run(main())


def test_a_folder_shared_with_another_process_is_never_served_stale(tmp_path: Path) -> None:
    """Replicas (or any two servers) sharing VOICES_DIR: a voice saved, overwritten or deleted by one is what the
    other serves on its next request, though the other has it cached."""
    here = VoiceService(FakeEngine(), VoiceStore(tmp_path, 1024, 512), SpeakerCache(10, 60))
    elsewhere = VoiceStore(tmp_path, 1024, 512)  # the other process's view of the same folder
    first, second = fake_latents(1), fake_latents(2)
    elsewhere.save("shared", first, "Shared", "", overwrite=False)
    assert torch.equal(asyncio.run(here.resolve("shared")).gpt_cond_latent, first.gpt_cond_latent)
    assert torch.equal(asyncio.run(here.resolve("shared")).gpt_cond_latent, first.gpt_cond_latent)  # cached
    elsewhere.save("shared", second, "Shared", "", overwrite=True)
    assert torch.equal(asyncio.run(here.resolve("shared")).gpt_cond_latent, second.gpt_cond_latent)
    elsewhere.delete("shared")
    with pytest.raises(VoiceNotFound):
        asyncio.run(here.resolve("shared"))
    for index in range(50):  # unknown ids leave nothing behind
        with pytest.raises(VoiceNotFound):
            asyncio.run(here.resolve(f"nobody-{index}"))
    assert here._versions == {}


def test_two_servers_on_one_voice_folder(tmp_path: Path) -> None:
    speak = {"text": "Hi.", "language": "en", "speaker_id": "between-servers"}
    with (
        app_client(FakeEngine(), app_settings(tmp_path)) as one,
        app_client(FakeEngine(), app_settings(tmp_path)) as two,
    ):
        latents = one.get("/studio_speakers").json()["Dummy Tenor"]
        assert one.post("/save_voice/between-servers", json=latents).status_code == 201
        assert two.post("/tts_stream", json=speak).status_code == 200  # saved through one, spoken by two
        assert one.delete("/saved_voices/between-servers").status_code == 200
        assert two.post("/tts_stream", json=speak).status_code == 404  # two had it cached


def test_a_cut_or_foreign_voice_file_is_unreadable_and_left_out_of_the_list(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, 1024, 512)
    store.save("good", latents(1), "Good", "", overwrite=False)
    whole = (tmp_path / "good.safetensors").read_bytes()
    foreign = {
        "cut": whole[:-4],  # its header intact: a listing, which reads only the header, must notice too
        "padded": whole + b"\0",
        "tiny": b"\x01",
        "huge-header": (2**40).to_bytes(8, "little") + b"{}",
        "not-a-header": (2).to_bytes(8, "little") + b"[]",
    }
    for voice_id, content in foreign.items():
        (tmp_path / f"{voice_id}.safetensors").write_bytes(content)
        with pytest.raises(VoiceUnreadable):
            store.load(voice_id)
    assert [(record.voice_id, record.size_bytes) for record in store.records()] == [("good", len(whole))]
    assert store.load("good")[0].size_bytes == len(whole)
