"""The app's middleware, one module each; `main.create_app` adds them, in this order from the outside in:

1. `allowed_hosts`: 400 (a socket: refused) for a `Host` that is not one of the server's (DNS rebinding).
2. `cors`: Starlette's CORS middleware for CORS_ALLOW_ORIGINS; answers preflights.
3. `replica_header`: X-Replica on every response (cluster/ only).
4. `request_counting`: counts each request by method, route and status.
5. `origin_guard`: 403 (a socket: refused) for a write from a page that is neither allowed nor the server's own.
6. `api_keys`: 401 (a socket: refused) without a key when keys are on; sets the caller.
7. `upload_limit`: 413 for a body over MAX_UPLOAD_MB.

Each is pure ASGI but CORS, so streaming responses pass untouched; each refuses with the one error renderer
(api/errors.py), and a WebSocket before its handshake is accepted (the client sees 403).
"""
