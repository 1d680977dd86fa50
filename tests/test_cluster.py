"""The server as a Ray Serve application (cluster/): `python -m cluster`, what `make cluster` runs, with
two replicas of the tiny model on a local Ray, through Serve's HTTP proxy on 127.0.0.1.

Serve routes each request to a replica of its choosing; every response names its replica (X-Replica),
so a test that needs the other replica repeats a harmless request until the other one answers.
The replica-killing tests run last: they change the cluster (each waits for Serve's replacement). The cluster
itself is started by tests/cluster_harness.py; the Serve configs are checked in test_cluster_config.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.jobs.store import CLAIM_TIMEOUT_S
from tests.audio_checks import assert_complete_wav, assert_pcm_wav
from tests.cluster_harness import (
    LONG_TEXT,
    REPLICAS,
    SENTENCE,
    Cluster,
    RawStream,
    run_cluster,
    speech,
    wait_for_replicas,
)
from tests.conftest import BUILTIN_SPEAKER

pytest.importorskip("ray", reason="the cluster extra (requirements-cluster.txt) is not installed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with run_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def test_both_replicas_serve_the_api_and_report_themselves(cluster: Cluster) -> None:
    assert len(cluster.replicas) == REPLICAS
    first = httpx.get(f"{cluster.url}/health").json()
    assert first["replica"] in cluster.replicas and first["status"] == "ready"
    other = cluster.until_other_replica(lambda client: client.get("/health"), first["replica"]).json()
    assert other["replica"] in cluster.replicas and other["pid"] != first["pid"]  # one process each
    # One scrape through the router sees every replica's series, each labelled.
    metrics = httpx.get(f"{cluster.url}/metrics").text
    for replica in cluster.replicas:
        assert f'xtts_request_capacity{{replica="{replica}"}} 4.0' in metrics
    assert len([line for line in metrics.splitlines() if line.startswith("# TYPE xtts_request_capacity ")]) == 1
    assert httpx.get(f"{cluster.url}/languages").json()[0] == "en"


def test_concurrent_streams_spread_over_both_replicas_and_sound_whole(cluster: Cluster) -> None:
    results: list[tuple[str, str, bytes]] = []
    failures: list[str] = []

    def listen(seed: int) -> None:
        with httpx.Client(base_url=cluster.url, timeout=120) as client:
            with client.stream("POST", "/tts_stream", json=speech(seed=seed)) as response:
                body = response.read()  # raises if the body is incomplete
            if response.status_code != 200:
                failures.append(f"{response.status_code} from {response.headers.get('x-replica')}: {body[:200]!r}")
                return
            results.append((response.headers["x-replica"], response.headers["x-session-id"], body))

    listeners = [threading.Thread(target=listen, args=(seed,)) for seed in range(8)]
    for listener in listeners:
        listener.start()
    for listener in listeners:
        listener.join()
    assert not failures and len(results) == 8, failures
    assert {replica for replica, _, _ in results} == cluster.replicas, "one replica served every stream"
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        for replica, session_id, body in results:
            assert_pcm_wav(body, min_seconds=0.5)
            assert client.get(f"/stream_status/{session_id}").json()["replica"] == replica


def test_a_voice_saved_overwritten_or_deleted_through_one_replica_is_seen_by_the_other(cluster: Cluster) -> None:
    def spoken(client: httpx.Client) -> httpx.Response:
        return client.post("/tts", json=speech(speaker_id="shared-voice", seed=3))

    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        speakers = client.get("/studio_speakers").json()
        tenor, bass = speakers["Dummy Tenor"], speakers["Dummy Bass"]
        saved = client.post("/save_voice/shared-voice", json={**tenor, "name": "Shared"})
        assert saved.status_code == 201, saved.text
    saver = saved.headers["x-replica"]
    # Served by the replica that did not save it (and now cached there).
    first = cluster.until_other_replica(spoken, saver)
    assert first.status_code == 200, first.text
    as_tenor = assert_complete_wav(first.content)

    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        overwritten = client.post("/save_voice/shared-voice", json={**bass, "name": "Shared", "overwrite": True})
        assert overwritten.status_code in (200, 201), overwritten.text
    for replica in cluster.replicas:  # each replica speaks the new voice, none the cached old one
        response = cluster.answered_by(spoken, replica)
        assert response.status_code == 200, response.text
        as_bass = assert_complete_wav(response.content)
        stale = as_bass.shape == as_tenor.shape and np.array_equal(as_bass, as_tenor)
        assert not stale, f"{replica} spoke the overwritten voice"

    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        deleted = client.delete("/saved_voices/shared-voice")
        assert deleted.status_code in (200, 204), deleted.text
    gone = cluster.until_other_replica(spoken, deleted.headers["x-replica"])
    assert gone.status_code == 404 and gone.json()["error"] == "voice_not_found", gone.text


def test_xtts_api_settings_set_through_one_replica_apply_on_the_other(cluster: Cluster) -> None:
    """SillyTavern sets its defaults once (/xtts-api/set_tts_settings), then speaks through any replica."""
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        answer = client.post("/xtts-api/set_tts_settings", json={"temperature": 0.55, "speed": 1.25})
        assert answer.status_code == 200, answer.text
    other = cluster.until_other_replica(
        lambda client: client.get("/xtts-api/get_tts_settings"), answer.headers["x-replica"]
    )
    assert (other.json()["temperature"], other.json()["speed"]) == (0.55, 1.25)


def test_status_and_cancel_reach_the_replica_that_runs_the_stream(cluster: Cluster) -> None:
    for _attempt in range(12):
        stream = RawStream(cluster, speech(LONG_TEXT))
        assert stream.status == 200
        owner, session_id = stream.headers["x-replica"], stream.headers["x-session-id"]
        stream.read_some_audio()

        def status(client: httpx.Client, session_id: str = session_id) -> httpx.Response:
            return client.get(f"/stream_status/{session_id}")

        remote_status = cluster.until_other_replica(status, owner)
        assert remote_status.status_code == 200, remote_status.text
        assert remote_status.json()["replica"] == owner and remote_status.json()["state"] == "generating"

        cancelled = httpx.delete(f"{cluster.url}/stream_cancel/{session_id}", timeout=30)
        asked_at = time.monotonic()
        assert cancelled.status_code == 200, cancelled.text
        stream.read_to_end()
        ended_after_s = time.monotonic() - asked_at
        assert not stream.complete, "a cancelled stream must not look complete"
        if cancelled.headers["x-replica"] == owner:
            continue  # the router sent the cancel to the owner itself: try again for a remote one
        assert ended_after_s < 2.0, f"the stream went on {ended_after_s:.2f} s after a remote cancel"
        for replica in cluster.replicas:
            final = cluster.answered_by(status, replica)
            assert final.json()["state"] == "cancelled" and final.json()["error"] == "cancelled by request"
        again = httpx.delete(f"{cluster.url}/stream_cancel/{session_id}", timeout=30)
        assert again.status_code == 409, again.text
        return
    raise AssertionError("no cancel was routed to a replica other than the stream's")


def test_a_client_chosen_session_id_is_unique_across_replicas(cluster: Cluster) -> None:
    def speak(client: httpx.Client) -> httpx.Response:
        return client.post("/tts", json=speech(session_id="chosen-by-the-client"))

    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        first = speak(client)
    assert first.status_code == 200, first.text
    again = cluster.until_other_replica(speak, first.headers["x-replica"])
    assert again.status_code == 409 and again.json()["error"] == "session_conflict", again.text


def test_unknown_sessions_are_404_from_every_replica(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        for _ in range(4):
            assert client.get("/stream_status/no-such-session").status_code == 404
            assert client.delete("/stream_cancel/no-such-session").status_code == 404


JOB_TEXT = "\n\n".join(f"Paragraph {n} of a story the cluster reads." for n in range(1, 9))  # a sentence each


def job_body(seed: int) -> dict[str, object]:
    return {"text": JOB_TEXT, "voice": BUILTIN_SPEAKER, "format": "wav", "seed": seed}


def replica_figures(cluster: Cluster, name: str) -> dict[str, float]:
    """One metric's value for each replica, from one scrape through the router (every replica's series)."""
    pattern = re.compile(rf'^{name}{{replica="([^"]+)"}} (\S+)$', re.MULTILINE)
    return {replica: float(value) for replica, value in pattern.findall(httpx.get(f"{cluster.url}/metrics").text)}


def test_a_job_is_spoken_by_both_replicas(cluster: Cluster) -> None:
    steps_before = replica_figures(cluster, "xtts_batch_steps_total")
    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        submitted = client.post("/v1/jobs", json=job_body(seed=11))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 180
    while (job := httpx.get(f"{cluster.url}/v1/jobs/{job_id}", timeout=30).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "completed" and job["sentences_done"] == job["sentences_total"] == 8, job
    # Each replica's engine decoded some of the job's sentences (the driving replica sent them through Serve).
    steps_after = replica_figures(cluster, "xtts_batch_steps_total")
    assert set(steps_after) == cluster.replicas
    idle = [replica for replica in cluster.replicas if steps_after[replica] <= steps_before[replica]]
    assert not idle, f"replicas {idle} spoke none of the job's sentences"
    audio = httpx.get(f"{cluster.url}/v1/jobs/{job_id}/audio", timeout=60)
    assert audio.status_code == 200 and assert_complete_wav(audio.content).size > 0


def test_a_cancelled_job_stops_on_every_replica(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        submitted = client.post("/v1/jobs", json={**job_body(seed=12), "text": "\n\n".join([LONG_TEXT] * 8)})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job_id}").json()["sentences_done"] == 0:  # sentences being spoken
            assert time.monotonic() < deadline
            time.sleep(0.2)
    cancelled = httpx.delete(f"{cluster.url}/v1/jobs/{job_id}", timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    # The driving replica learns of it at its next heartbeat (runner.HEARTBEAT_S) and cancels its sentences on
    # every replica: each engine's rows are free soon after.
    deadline = time.monotonic() + 15
    while any(replica_figures(cluster, "xtts_batch_streams").values()):
        assert time.monotonic() < deadline, replica_figures(cluster, "xtts_batch_streams")
        time.sleep(0.2)
    assert httpx.get(f"{cluster.url}/v1/jobs/{job_id}", timeout=30).json()["status"] == "cancelled"


def test_429_only_once_every_replica_is_full(cluster: Cluster) -> None:
    capacity = 4 * REPLICAS  # MAX_CONCURRENT_REQUESTS per replica
    streams: list[RawStream] = []
    queued: list[socket.socket] = []
    try:
        for _ in range(capacity):  # each admitted at once while any replica has a free slot (not queued)
            stream = RawStream(cluster, speech(LONG_TEXT))
            assert stream.status == 200, f"refused with {len(streams)} of {capacity} slots taken: {stream.received!r}"
            stream.read_some_audio(1000)
            streams.append(stream)
        per_replica = [sum(s.headers["x-replica"] == replica for s in streams) for replica in cluster.replicas]
        assert sorted(per_replica) == [4, 4]
        for _ in range(2 * REPLICAS):  # fill both queues (MAX_QUEUE_SIZE=2 each)
            queued.append(RawStream.send(cluster, speech(LONG_TEXT)))
            time.sleep(0.2)
        # Refused at once with both queues full (or, had a filler been refused in its place, after
        # QUEUE_TIMEOUT in a queue behind streams that never end: a 429 either way).
        refused = httpx.post(f"{cluster.url}/tts_stream", json=speech(), timeout=60)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"] == "overloaded"
        assert httpx.get(f"{cluster.url}/health", timeout=30).status_code == 200  # short requests still served
    finally:
        for stream in streams:
            stream.close()
        for sock in queued:
            sock.close()
    # Closing the sockets cancels the streams and frees every slot.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        figures = [httpx.get(f"{cluster.url}/health").json()["requests"]["in_flight"] for _ in range(6)]
        if not any(figures):
            break
        time.sleep(0.3)
    assert not any(figures), figures


STORY = "\n\n".join(f"Paragraph {n} of a story the cluster reads." for n in range(1, 25))  # 24 sentences


def stored_job(cluster: Cluster, job_id: str) -> tuple[sqlite3.Row, dict[int, int]]:
    """The job's row in the store the replicas share, and its finished sentences (index: samples)."""
    with contextlib.closing(sqlite3.connect(cluster.data_dir / "jobs.sqlite3", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        job = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        done = db.execute("SELECT idx, samples FROM sentences WHERE job_id = ? AND done = 1", (job_id,)).fetchall()
    return job, {int(index): int(samples) for index, samples in done}


def wait_until_dead(pid: int) -> None:
    """Until the process is gone or a zombie: it writes nothing more."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs 10 s after SIGKILL")


def test_a_job_whose_driving_replica_is_killed_is_finished_by_the_other_each_sentence_once(cluster: Cluster) -> None:
    pids = {cluster.answered_by(lambda client: client.get("/health"), r).json()["pid"]: r for r in cluster.replicas}
    job_audio_before = replica_figures(cluster, "xtts_job_audio_seconds_total")
    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        submitted = client.post("/v1/jobs", json={**job_body(seed=13), "text": STORY})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 60
    while len((stored := stored_job(cluster, job_id))[1]) < 2:  # a few sentences done, the next ones being spoken
        assert time.monotonic() < deadline, dict(stored[0])
        time.sleep(0.05)
    driver = stored[0]["claimant"]  # <pid>@<host> of the replica driving the job
    pid = int(driver.split("@")[0])
    assert pid in pids, f"the job's claimant {driver} is none of the replicas {pids}"
    victim = pids[pid]

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until_dead(pid)
    total, done_at_kill = stored[0]["sentences_total"], stored_job(cluster, job_id)[1]
    assert 2 <= len(done_at_kill) < total, "the kill did not land mid-job"

    takeover_s: float | None = None
    deadline = time.monotonic() + 120
    while (row := stored_job(cluster, job_id)[0])["status"] in ("queued", "running"):
        if takeover_s is None and row["claimant"] not in (None, driver):
            takeover_s = time.monotonic() - killed_at
        assert time.monotonic() < deadline, dict(row)
        time.sleep(0.1)
    job = httpx.get(f"{cluster.url}/v1/jobs/{job_id}", timeout=30).json()
    assert job["status"] == "completed" and job["sentences_done"] == total, job
    # Taken over because the driver's process is gone, not after its heartbeat went stale (CLAIM_TIMEOUT_S).
    assert takeover_s is not None and takeover_s < CLAIM_TIMEOUT_S / 2, takeover_s

    # Resumed at its first unfinished sentence: only the sentences not done at the kill were made again.
    resumed = f"job {job_id}: resumed ({total - len(done_at_kill)} of {total} sentences left)"
    deadline = time.monotonic() + 10  # Ray copies the replicas' logs to the cluster's every so often
    while (lines := cluster.log().count(f"job {job_id}: resumed")) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lines == 1 and resumed in cluster.log(), [line for line in cluster.log().splitlines() if job_id in line]
    # Each of those made once: the other replicas' runners finished exactly their audio (a sentence made twice
    # is counted twice there, though the store marks it done once).
    _, done = stored_job(cluster, job_id)
    made_after = sum(samples for index, samples in done.items() if index not in done_at_kill)
    job_audio_after = replica_figures(cluster, "xtts_job_audio_seconds_total")
    others = job_audio_after.keys() - {victim}
    finished_by_others = sum(job_audio_after[replica] - job_audio_before.get(replica, 0.0) for replica in others)
    assert finished_by_others == pytest.approx(made_after / 24000, abs=1e-3)

    audio = httpx.get(f"{cluster.url}/v1/jobs/{job_id}/audio", timeout=60)
    assert audio.status_code == 200, audio.text
    samples = assert_complete_wav(audio.content)
    assert samples.size == sum(done.values()) and job["duration_s"] == pytest.approx(samples.size / 24000, abs=1e-3)

    # Serve replaces the killed replica; the test after this one needs two.
    survivor = next(iter(cluster.replicas - {victim}))
    replacements = wait_for_replicas(cluster, 1, not_in=cluster.replicas)
    assert survivor in wait_for_replicas(cluster, REPLICAS, not_in={victim})
    cluster.replicas = {survivor, *replacements}


def test_a_replica_killed_mid_stream_fails_its_streams_only_and_is_replaced(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.url, timeout=60) as client:
        tenor = client.get("/studio_speakers").json()["Dummy Tenor"]
        for index in range(3):
            assert client.post(f"/save_voice/keep-{index}", json={**tenor, "name": f"Keep {index}"}).status_code == 201
    streams: dict[str, RawStream] = {}
    for _ in range(20):  # one stream on each replica
        stream = RawStream(cluster, speech(" ".join([SENTENCE] * 6)))
        assert stream.status == 200
        replica = stream.headers["x-replica"]
        if replica in streams:
            stream.close()
            continue
        streams[replica] = stream
        if len(streams) == REPLICAS:
            break
    assert set(streams) == cluster.replicas
    victim, survivor = sorted(streams)
    pid = cluster.until_other_replica(lambda client: client.get("/health"), survivor).json()["pid"]
    for stream in streams.values():
        stream.read_some_audio()

    os.kill(pid, signal.SIGKILL)
    killed, kept = streams[victim].read_to_end(), streams[survivor].read_to_end()
    assert not streams[victim].complete, "the killed replica's stream looked complete"
    assert kept.endswith(b"0\r\n\r\n"), "the other replica's stream did not finish"

    replacements = wait_for_replicas(cluster, 1, not_in=cluster.replicas)
    assert survivor in wait_for_replicas(cluster, REPLICAS, not_in={victim})
    cluster.replicas = {survivor, *replacements}
    for index in range(3):  # every voice whole, through both replicas

        def load(client: httpx.Client, voice_id: str = f"keep-{index}") -> httpx.Response:
            return client.get(f"/saved_voices/{voice_id}")

        for replica in cluster.replicas:
            response = cluster.answered_by(load, replica)
            assert response.status_code == 200, response.text
    assert not list(cluster.voices_dir.glob(".tmp-*"))
    assert len(killed) > 0
