"""LiveKit Agents' Cartesia or ElevenLabs plugin against this server: ``tts.stream()`` standalone, text
pushed in pieces, input ended, audio frames and the timed transcript read back."""

from __future__ import annotations

import asyncio
import sys

from common import base_url, report
from livekit.agents import utils
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT


def make_tts(plugin: str):  # type: ignore[no-untyped-def]
    if plugin == "cartesia":
        from livekit.plugins import cartesia

        return cartesia.TTS(api_key="secret", base_url=base_url(), voice="en", model="sonic-2",
                            sample_rate=24000, word_timestamps=True)
    from livekit.plugins import elevenlabs

    return elevenlabs.TTS(api_key="secret", base_url=base_url() + "/v1", voice_id="en",
                          model="eleven_flash_v2_5", encoding="pcm_24000")


async def main(plugin: str) -> None:
    async with utils.http_context.open():
        tts = make_tts(plugin)
        stream = tts.stream()
        for piece in ("Hello there, ", "this is the first sentence. ", "And the second one."):
            stream.push_text(piece)
        stream.end_input()
        samples, rate, words = 0, 0, []
        async for audio in stream:
            samples += audio.frame.samples_per_channel
            rate = audio.frame.sample_rate
            for timed in audio.frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, []):
                words.append([str(timed), timed.start_time, timed.end_time])
        await stream.aclose()
        await tts.aclose()
    report(samples=samples, sample_rate=rate, words=words)


asyncio.run(main(sys.argv[2]))
