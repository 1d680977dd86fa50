"""Where a job's files live under DATA_DIR, and the only code that writes or removes them.

```
DATA_DIR/jobs.sqlite3               the job store (store.py)
DATA_DIR/jobs/<id>/pieces/<n>.pcm   each finished sentence's audio: 16-bit mono PCM at 24 kHz, written atomically
DATA_DIR/jobs/<id>/result/<file>    the assembled result (and one file per chapter), written atomically
```
A sentence's piece is written (temporary name, fsync, rename, folder fsync: `SharedFolder.write`) before the
store marks it done, so a piece the store calls done is whole. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from services.shared_folder import SharedFolder


class JobFiles:
    """One job's folder."""

    def __init__(self, data_dir: Path, job_id: str) -> None:
        self.root = data_dir / "jobs" / job_id
        self.pieces = self.root / "pieces"
        self.result = self.root / "result"

    def piece(self, index: int) -> Path:
        return self.pieces / f"{index:06d}.pcm"

    def write_piece(self, index: int, pcm: bytes) -> None:
        folder = SharedFolder(self.pieces)
        folder.create()
        folder.write(self.piece(index).name, pcm, replace=True)

    def result_file(self, name: str) -> Path:
        """A result file by the name the job's record gives it (never a path a client chose)."""
        return self.result / Path(name).name

    def remove_pieces(self) -> None:
        shutil.rmtree(self.pieces, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
