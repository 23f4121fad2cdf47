"""A plain Faust agent over the same topics: why ingest is not a Faust stream.

Run as a subprocess by ``omnipipe bench --with-faust`` (a Faust worker owns
its process's event loop and signal handlers). Mode ``consume`` only
iterates the stream; ``send`` awaits one ``topic.send`` per event, the naive
way to write ingest as an agent.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def main(bootstrap: str, topics: str, expected: int, mode: str, out_topic: str) -> None:
    import faust
    from faust.worker import Worker

    app = faust.App(
        f"bench-faust-{mode}-{os.getpid()}", broker=f"kafka://{bootstrap}",
        autodiscover=False, web_enabled=False, topic_allow_declare=False,
        topic_disable_leader=True, broker_rebalance_timeout=6, broker_session_timeout=6,
        broker_heartbeat_interval=1, stream_buffer_maxsize=16384,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(*topics.split(","), key_serializer="raw", value_serializer="raw")
    sink = app.topic(out_topic, key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"n": 0, "t0": None}

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            if mode == "send":
                await sink.send(key=event.key, value=event.value)
            state["n"] += 1
            if state["n"] >= expected:
                rate = state["n"] / (time.perf_counter() - state["t0"])
                print(f"RATE {rate:.1f}", flush=True)
                os._exit(0)

    app.agent(source, name="bench")(agent)
    sys.argv = sys.argv[:1]  # the worker must not see our arguments
    Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
