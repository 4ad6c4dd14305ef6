"""The official ElevenLabs SDK's HTTP methods against this server (``base_url``): ``text_to_speech.convert``
and ``.stream`` in PCM 16 kHz and mu-law 8 kHz, and a refusal in its error type. (Its realtime helper
builds a wss:// URL of its own, so it cannot reach a plain ws:// server and is not exercised.)"""

from __future__ import annotations

from common import base_url, report
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

TEXT = "Hello there, this is the first sentence."


def main() -> None:
    client = ElevenLabs(api_key="secret", base_url=base_url())
    sizes: dict[str, int] = {}
    for method in ("convert", "stream"):
        for output_format in ("pcm_16000", "ulaw_8000"):
            call = getattr(client.text_to_speech, method)
            audio = b"".join(call("en", text=TEXT, model_id="eleven_flash_v2_5", output_format=output_format))
            sizes[f"{method}_{output_format}"] = len(audio)
    try:
        b"".join(client.text_to_speech.convert("no-such-voice", text=TEXT, output_format="pcm_16000"))
        refusal = None
    except ApiError as error:
        refusal = [error.status_code, error.body]
    try:
        b"".join(ElevenLabs(api_key="wrong", base_url=base_url()).text_to_speech.convert("en", text=TEXT))
        unauthorized = None
    except ApiError as error:
        unauthorized = [error.status_code, error.body]
    report(sizes=sizes, refusal=refusal, unauthorized=unauthorized)


main()
