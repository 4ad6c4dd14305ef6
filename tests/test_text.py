"""Chunking keeps every character, in order, and respects its length limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from text.chunking import FIRST_CHUNK_BYTES, chunk_text, max_chunk_bytes, nbytes


def squash_whitespace(text: str) -> str:
    return "".join(text.split())

ALPHABET = st.sampled_from([*list("abcdeXYZ 0123,.;:!?…\n\t'\"()你好世界。！？，、；："), "é", "ß", "🙂"])


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=ALPHABET, max_size=400), limit=st.integers(min_value=20, max_value=300))
def test_chunks_reproduce_input_modulo_whitespace(text: str, limit: int) -> None:
    chunks = chunk_text(text, limit)
    assert squash_whitespace("".join(chunks)) == squash_whitespace(text)
    assert all(chunk and chunk == chunk.strip() for chunk in chunks)
    assert all(nbytes(chunk) <= limit for chunk in chunks)
    if len(chunks) > 1 and nbytes(chunks[0]) > min(FIRST_CHUNK_BYTES, limit):
        # A longer first chunk keeps a sentence or clause whole, or grows a too-short start.
        head = chunk_text(chunks[0], limit, first_max_bytes=limit)
        assert len(head) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=12), min_size=1, max_size=40))
def test_words_are_never_cut_when_they_fit(words: list[str]) -> None:
    text = " ".join(words) + "."
    for chunk in chunk_text(text, 40):
        for word in chunk.rstrip(".").split(" "):
            assert word in words


def test_first_chunk_is_short_and_later_chunks_are_long() -> None:
    text = ("Hello there. " + "This is a much longer sentence that goes on for a while, with clauses. " * 6)
    chunks = chunk_text(text, 200)
    assert chunks[0] == "Hello there."
    assert all(nbytes(c) > FIRST_CHUNK_BYTES for c in chunks[1:-1])
    assert len(chunks) <= 4


def test_sentence_boundaries_are_preferred() -> None:
    chunks = chunk_text("One, two, three. Four five six seven eight nine ten eleven twelve. Thirteen.", 70)
    assert chunks == ["One, two, three.", "Four five six seven eight nine ten eleven twelve. Thirteen."]
    # A first sentence too short to voice well on its own takes the next one along.
    assert chunk_text("Hi. How are you doing today? I hope the weather is fine where you are.", 80) == [
        "Hi. How are you doing today?", "I hope the weather is fine where you are."]


def test_cjk_punctuation_splits_without_spaces() -> None:
    chunks = chunk_text("你好。我是一个测试。今天天气很好，我们去公园散步吧！", 30)
    assert chunks == ["你好。我是一个测试。", "今天天气很好，", "我们去公园散步吧！"]


def test_first_chunk_never_cuts_a_sentence_between_words() -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the quiet river bank."  # 72 bytes > 60
    assert chunk_text(sentence + " Next one.", 200) == [sentence, "Next one."]
    assert chunk_text("Right, the quick brown fox jumps over the lazy dog, near the quiet river.", 200) == [
        "Right, the quick brown fox jumps over the lazy dog,", "near the quiet river."]


def test_long_word_is_split_hard() -> None:
    chunks = chunk_text("x" * 70, 25)
    assert [len(c) for c in chunks] == [25, 25, 20]


def test_empty_and_whitespace() -> None:
    assert chunk_text("", 100) == []
    assert chunk_text(" \n\t ", 100) == []


def test_budget_follows_the_reference_pace() -> None:
    # 50 bytes of transcript over 5 s -> 10 bytes/s; 22 s budget minus 5 s of reference -> 170 bytes.
    assert max_chunk_bytes("x" * 50, 5.0) == 170
    assert max_chunk_bytes("x" * 50, 5.0, speed=2.0) == 340
