"""`make stress`: the server under load and attack, on 127.0.0.1 only, bounded in count and time.

Each part starts its own `python run.py` with the tiny random-weight model (short generations), attacks it,
and checks what a user relies on:

- schemathesis: generated requests for every operation in the OpenAPI document; no 5xx, every status and
  body as documented;
- load: N clients at once against MAX_CONCURRENT_REQUESTS slots and MAX_QUEUE_SIZE places: only 200 and
  429 (with Retry-After), /health answering fast meanwhile (p99);
- disconnect storm: clients that leave mid-stream; nothing in flight or queued afterwards;
- soak: many requests one after another in a few lanes; the server's RSS at request 100 and at the last;
- SIGKILL during saves: the server killed while clients save voices; after a restart no temporary file is
  left, every listed voice loads, none is half-written;

and issue 21's attacks, one row each:

- poisoned latents: latents of 1e20 sent while three streams run: a 4xx naming the field, the three whole;
  saving such latents is refused, and a voice file poisoned on disk is refused when spoken;
- DNS rebinding: Host and Origin both `attacker.example`: a DELETE, a read and a socket handshake refused;
- socket turns: a /v1/tts/ws context speaks a second turn, and another after a barge-in `clear`;
- slow reader: a socket client silent past the keep-alive's limit then reading on loses no audio;
- shutdown: SIGTERM mid-segment: the segment finishes, the socket closes 1012, the log says shutdown;
- small inputs: a 1 MB model name not echoed whole, `top_k` true or "1_000", a malformed query escape.

Prints a table and writes bench/results/stress.json (`--short` for CI's quick run). Exits 1 if any row fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from bench.stress_load import disconnect_storm, load, schemathesis_run, soak
from bench.stress_requests import request_attacks
from bench.stress_saves import sigkill_during_saves
from bench.stress_server import REPO
from bench.stress_shutdown import shutdown_during_socket
from bench.stress_sockets import socket_attacks

RESULTS = REPO / "bench" / "results" / "stress.json"
SHORT_SIZES = {"examples": 5, "load": 30, "storm": 30, "soak": 200, "kills": 3}
FULL_SIZES = {"examples": 40, "load": 50, "storm": 250, "soak": 1000, "kills": 20}

Rows = dict[str, dict[str, object]]


def parts(folder: Path, short: bool) -> list[tuple[str, Callable[[], Rows]]]:
    """Each part's label and what runs it, in order; a part returns its rows by name, each with `ok`."""
    sizes = SHORT_SIZES if short else FULL_SIZES
    return [
        ("schemathesis", lambda: {"schemathesis": schemathesis_run(folder / "schema", sizes["examples"])}),
        ("load", lambda: {"load": load(folder / "load", sizes["load"])}),
        ("disconnect_storm", lambda: {"disconnect_storm": disconnect_storm(folder / "storm", sizes["storm"])}),
        ("soak", lambda: {"soak": soak(folder / "soak", sizes["soak"])}),
        ("sigkill_during_saves", lambda: {"sigkill_during_saves": sigkill_during_saves(folder / "kill",
                                                                                       sizes["kills"])}),
        ("poisoned_latents, dns_rebinding, small_inputs", lambda: request_attacks(folder / "requests")),
        ("socket_turns, slow_reader", lambda: socket_attacks(folder / "sockets", short)),
        ("shutdown_during_socket", lambda: {"shutdown_during_socket": shutdown_during_socket(folder / "shutdown")}),
    ]  # fmt: skip


def run_part(label: str, part: Callable[[], Rows]) -> Rows:
    """A part's rows with its wall time; a part that crashes is a failed row, and the others still run."""
    started = time.perf_counter()
    print(f"{label} ...", flush=True)
    try:
        rows = part()
    except Exception as error:  # the server would not start, say: the row says so and the run exits 1
        rows = {label.split(",")[0]: {"problems": [f"the part crashed: {error!r}"], "ok": False}}
    wall_s = round(time.perf_counter() - started, 1)
    return {name: {**row, "wall_s": wall_s} for name, row in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI's quick run: fewer requests, rounds and examples")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, object] = {"short": args.short, "machine": f"{psutil.cpu_count(logical=False)} cores"}
    with tempfile.TemporaryDirectory(prefix="xtts-stress-") as scratch:
        for label, part in parts(Path(scratch), args.short):
            results.update(run_part(label, part))
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    rows_ok = [row.get("ok") for row in results.values() if isinstance(row, dict)]
    return 0 if all(rows_ok) else 1


def print_table(results: dict[str, object]) -> None:
    print(f"\n{'part':<22} {'ok':<4} figures")
    for name, part in results.items():
        if not isinstance(part, dict):
            continue
        figures = {key: value for key, value in part.items() if key not in {"ok", "output_tail", "summary", "problems"}}
        print(f"{name:<22} {'yes' if part['ok'] else 'NO':<4} {json.dumps(figures)}")
        for problem in part.get("problems", []) or []:
            print(f"{'':<27}problem: {problem}")
        if part.get("output_tail"):
            print(part["output_tail"])


if __name__ == "__main__":
    sys.exit(main())
