#!/usr/bin/env python3
"""Cost of the text front end: normalisation per 1 000 characters and per sentence, SSML parsing per
document. The goal is < 1 ms per sentence, negligible against synthesis.

    python -m bench.normalize            # human-readable figures, then one JSON line
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable

from bench.common import parser
from text.normalize import normalize
from text.ssml import parse_ssml

SENTENCES = {
    "en_mixed": [
        "It costs $3.50 at 10:30 pm on 2026-11-29, said Dr. Smith.",
        "Drive 100 km/h for 3.5 hours, then turn on Main St. near the 3rd exit.",
        "Visit https://www.example.com/docs or write to help@example.com today.",
        "In 2026 about 1,234,567 people saw a 50% rise, e.g. in the 1990s.",
    ],
    "en_plain": [
        "The quick brown fox jumps over the lazy dog, and nobody minds at all.",
        "Streaming speech should start quickly and keep going without gaps.",
    ],
    "zh_mixed": [
        "今天是2026年11月29日，气温-3.5°C，价格上涨了50%，约¥12.5一斤。",
        "会议在下午2:05开始，请拨打13800138000，或访问example.com了解详情。",
    ],
}
SSML = ("<speak>It costs <say-as interpret-as='cardinal'>350</say-as> dollars.<break time='500ms'/>"
        "<prosody rate='slow'>Call <say-as interpret-as='telephone'>555-0100</say-as> at 10:30.</prosody>"
        "<p><s>The <sub alias='World Wide Web'>WWW</sub> is big.</s></p></speak>")


def per_call(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of one call, over ``repeat`` timed batches (after a warm-up call)."""
    fn()
    inner = 50
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--repeat", type=int, default=20)
    args = cli.parse_args()
    start = time.perf_counter()
    normalize("warm 1 up", "en")  # first call per language compiles its alternation: report it apart
    first_ms = (time.perf_counter() - start) * 1e3
    results: dict[str, object] = {"first_call_ms": round(first_ms, 3), "python": platform.python_version()}
    for name, sentences in SENTENCES.items():
        text = " ".join(sentences)
        seconds = per_call(lambda text=text: normalize(text), args.repeat)  # type: ignore[misc]
        per_sentence = seconds / len(sentences)
        per_kchar = seconds / len(text) * 1000
        results[name] = {"chars": len(text), "sentences": len(sentences),
                         "ms_per_sentence": round(per_sentence * 1e3, 4),
                         "ms_per_1000_chars": round(per_kchar * 1e3, 4)}
        print(f"{name:9s} {per_sentence * 1e3:7.3f} ms/sentence  {per_kchar * 1e3:7.3f} ms/1000 chars")
    seconds = per_call(lambda: parse_ssml(SSML), args.repeat)
    results["ssml_ms_per_document"] = round(seconds * 1e3, 4)
    results["ssml_chars"] = len(SSML)
    print(f"ssml      {seconds * 1e3:7.3f} ms/document ({len(SSML)} chars)   first call {first_ms:.1f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
