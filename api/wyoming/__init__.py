"""The Wyoming protocol (Home Assistant's Assist) beside HTTP, on HOST:WYOMING_PORT: an entry point like the HTTP
routers, speaking through the same services (voices, speech sessions, admission, metrics) as they do.

Events (the `wyoming` package frames them: a JSON header line, optional JSON data, optional PCM payload):

- `describe` -> `info`: one TTS program that streams (`supports_synthesize_streaming`), its voices the saved voices
  and built-in speakers, each with the languages XTTS speaks (`voices.py`).
- `synthesize` -> `audio-start` (24 kHz, 16-bit, mono), `audio-chunk`s as the model makes them, one `audio-stop`:
  the whole text is one session (`speaking.speak_whole`).
- `synthesize-start`, `synthesize-chunk`s, `synthesize-stop` -> each sentence spoken once it is complete, as its own
  `audio-start`/`audio-chunk`s/`audio-stop`, then `synthesize-stopped` (`speaking.StreamedSynthesis`); the plain
  `synthesize` Home Assistant repeats inside a stream is ignored.
- `ping` -> `pong`; anything else, and every request that cannot be served, -> `error` (`text`, and `code`: the
  HTTP API's error codes); the connection goes on serving.

Wyoming has no authentication: whoever reaches the port may speak with every voice (README, Home Assistant).

The package imports nothing itself: `python -m api.wyoming.check` (a client) starts without loading the server.
"""
