"""Loaded by `card-agent serve` when bench/sign_split.py puts this folder on PYTHONPATH:
wraps the agent's ASGI app to log, per request, when the body was read, when the answer
started and when it ended (ms since the app was entered), with its Server-Timing."""

import os
import time

_LOG = os.environ.get("BENCH_SIGN_SPLIT_LOG")

if _LOG:
    import agent.api

    _create_app = agent.api.create_app
    _out = open(_LOG, "a", buffering=1)  # noqa: SIM115 - for the process's lifetime

    def _timed_create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
        app = _create_app(*args, **kwargs)

        async def timed(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] != "http":
                return await app(scope, receive, send)
            entered = time.perf_counter()
            marks: dict[str, object] = {}

            async def timed_receive():  # type: ignore[no-untyped-def]
                message = await receive()
                marks.setdefault("read", time.perf_counter())
                return message

            async def timed_send(message):  # type: ignore[no-untyped-def]
                if message["type"] == "http.response.start":
                    marks["start"] = time.perf_counter()
                    for name, value in message.get("headers", []):
                        if name.lower() == b"server-timing":
                            marks["timing"] = value.decode()
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    marks["end"] = time.perf_counter()

            await app(scope, timed_receive, timed_send)
            ms = {k: (v - entered) * 1000 for k, v in marks.items() if isinstance(v, float)}
            _out.write(
                f"{scope['path']}\t{ms.get('read', 0.0):.3f}\t{ms['start']:.3f}\t"
                f"{ms['end']:.3f}\t{marks.get('timing', '')}\n"
            )

        return timed

    agent.api.create_app = _timed_create_app
