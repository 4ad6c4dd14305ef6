"""The official Cartesia SDK against this server: an incremental WebSocket context with timestamps, a
cancelled context on the same socket, and /tts/bytes."""

from __future__ import annotations

import asyncio

from cartesia import AsyncCartesia
from common import base_url, report

FORMAT = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}


async def main() -> None:
    http = base_url()
    client = AsyncCartesia(api_key="secret", base_url=http, websocket_base_url=http.replace("http", "ws", 1))
    async with client.tts.websocket_connect() as connection:
        ctx = connection.context(model_id="sonic-3", voice={"mode": "id", "id": "en"}, output_format=FORMAT,
                                 add_timestamps=True)
        for piece in ("Hello there, ", "this is the first sentence. ", "And the second."):
            await ctx.push(piece)
        await ctx.no_more_inputs()
        audio, words, starts, ends, types = b"", [], [], [], []
        async for event in ctx.receive():
            types.append(event.type)
            if event.type == "chunk":
                audio += event.audio or b""
            elif event.type == "timestamps" and event.word_timestamps is not None:
                words += event.word_timestamps.words
                starts += event.word_timestamps.start
                ends += event.word_timestamps.end
        cancelled = connection.context(model_id="sonic-3", voice={"mode": "id", "id": "en"}, output_format=FORMAT)
        await cancelled.push("A long sentence that will not be heard to its end. " * 3)
        await asyncio.sleep(0.3)
        await cancelled.cancel()
        after = connection.context(model_id="sonic-3", voice={"mode": "id", "id": "en"}, output_format=FORMAT)
        await after.push("After the cancel.", continue_=False)
        after_types = [event.type async for event in after.receive()]
    response = await client.tts.generate(model_id="sonic-3", transcript="Bytes over HTTP.", voice={"id": "en"},
                                         output_format={"container": "raw", "encoding": "pcm_mulaw",
                                                        "sample_rate": 8000})
    mulaw = await response.read()
    report(audio_bytes=len(audio), sample_rate=16000, words=words, starts=starts, ends=ends, types=types,
           after_types=after_types, mulaw_bytes=len(mulaw))


asyncio.run(main())
