"""`python -m tests.fake_server`: run.py's server (its uvicorn options, signals and drain) with the fake engine, for
tests that need a real process and real signals but not a real model. Settings come from the environment as for
run.py; FAKE_CHUNKS (per sentence) and FAKE_CHUNK_DELAY_S (per chunk) pace the fake engine."""

from __future__ import annotations

import os
import sys

from config import Settings
from run import serve
from tests.fakes import FakeEngine


def main() -> int:
    engine = FakeEngine(
        chunks_per_sentence=int(os.environ.get("FAKE_CHUNKS", "3")),
        chunk_delay_s=float(os.environ.get("FAKE_CHUNK_DELAY_S", "0")),
    )
    try:
        return serve(Settings(), engine=engine)
    finally:
        engine.shutdown()


if __name__ == "__main__":
    sys.exit(main())
