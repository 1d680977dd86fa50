"""Start the server: `python run.py` (settings from the environment, see README)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType

import uvicorn
from pydantic import ValidationError

from config import Settings, describe_settings_error


class _DrainingServer(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT the app stops admitting streams before connections close."""

    def __init__(self, config: uvicorn.Config, begin_draining: Callable[[], None]) -> None:
        super().__init__(config)
        self._begin_draining = begin_draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._begin_draining()
        super().handle_exit(sig, frame)


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return 2
    from api.state import app_state
    from main import create_app

    server: uvicorn.Server | None = None

    def request_exit() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, request_exit=request_exit)

    def begin_draining() -> None:
        if (state := app_state(app)) is not None:
            state.begin_draining()

    config = uvicorn.Config(
        app,
        host=settings.HOST,
        port=settings.PORT,
        log_level="debug" if settings.DEBUG else "info",
        timeout_graceful_shutdown=int(settings.SHUTDOWN_TIMEOUT),
    )
    server = _DrainingServer(config, begin_draining)
    server.run()
    state = app_state(app)
    return 1 if state is not None and state.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
