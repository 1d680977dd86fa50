"""Start the server: `python run.py` (settings from the environment, see README)."""

from __future__ import annotations

import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from config import Settings, describe_settings_error


class _DrainingServer(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT the app stops admitting streams before connections close."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.loaded_app if self.config.loaded else None
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)  # unwrap uvicorn's and Starlette's middleware
        if app is not None and getattr(app.state, "gate", None) is not None:
            from main import begin_draining

            begin_draining(app)
        super().handle_exit(sig, frame)


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return 2
    from main import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.HOST,
        port=settings.PORT,
        log_level="debug" if settings.DEBUG else "info",
        timeout_graceful_shutdown=int(settings.SHUTDOWN_TIMEOUT),
    )
    server = _DrainingServer(config)
    app.state.request_exit = lambda: setattr(server, "should_exit", True)
    server.run()
    return 1 if app.state.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
