"""The one error table and the one request specification, held against the code and the docs: every code a
route or message can return is in the table and documented with its status, retryability and fault;
every code the server names in its source is in the table; every request field is documented where its
front end is."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from engine import SynthesisParams
from server.core.errors import DETAILS, ERRORS, STREAM_CODES, ServiceError, classify
from server.core.request import SPEC, StreamRequest, parse, wire_names
from server.http.speech_request import SPEECH
from server.runpod.jobs import JOB_INPUT
from server.ws.protocol import SYNTHESIZE

ROOT = Path(__file__).resolve().parent.parent
HTTP_DOC = (ROOT / "docs" / "http-api.md").read_text()
WS_DOC = (ROOT / "docs" / "protocol.md").read_text()


def _rows(doc: str, header: str) -> dict[str, list[str]]:
    """The rows of the markdown table under ``header``, by their first cell's code."""
    lines = doc[doc.index(header):].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("| `"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_code_is_documented_with_its_status_retry_and_fault() -> None:
    rows = _rows(HTTP_DOC, "| code | status | retry | fault | from | when |")
    assert set(rows) == set(ERRORS), sorted(set(rows) ^ set(ERRORS))
    for code, kind in ERRORS.items():
        statuses = " / ".join(str(s) for s in (kind.status, *kind.other_statuses))
        assert rows[code][:3] == [statuses, "yes" if kind.retryable else "no", kind.fault], code
    details = _rows(HTTP_DOC, "| code | refines | status | when |")
    ranges = {f"invalid_{f.name}": "bad_request" for f in fields(SynthesisParams)}  # one row, invalid_<field>
    assert {code: cells[0].strip("`") for code, cells in details.items()} == {
        **{code: refined for code, refined in DETAILS.items() if code not in ranges}, "invalid_<field>": "bad_request"}


def test_the_websocket_codes_are_documented_with_the_table() -> None:
    rows = _rows(WS_DOC, "| code | status | retry | fault | when | socket |")
    assert set(rows) == STREAM_CODES, sorted(set(rows) ^ STREAM_CODES)
    for code in STREAM_CODES:
        kind = ERRORS[code]
        assert rows[code][:3] == [str(kind.status), "yes" if kind.retryable else "no", kind.fault], code


def test_every_code_in_the_source_is_in_the_table() -> None:
    """ServiceError refuses an unknown code when it is raised; this finds one on a path no test takes."""
    named = re.compile(r'(?:ServiceError\(|error_response\(\s*\d+,\s*|detail=)"(\w+)"')
    found = {(path.relative_to(ROOT), code) for path in (ROOT / "server").rglob("*.py")
             for code in named.findall(path.read_text())}
    assert found, "the pattern finds nothing: it is out of date"
    assert {(path, code) for path, code in found if code not in ERRORS and code not in DETAILS} == set()


def test_the_exception_refuses_codes_and_statuses_outside_the_table() -> None:
    with pytest.raises(ValueError):
        ServiceError("no_such_code", "x")
    with pytest.raises(ValueError):
        ServiceError("bad_request", "x", detail="voice_not_found")  # refines unknown_voice, not bad_request
    with pytest.raises(ValueError):
        ServiceError("conflict", "x", status=404)
    assert ServiceError("storage_error", "x", status=507).status == 507
    assert ServiceError("storage_error", "x").status == 500


def test_lower_layers_map_by_type() -> None:
    from engine import InvalidAudioError, InvalidParameterError, ModelLoadError, TranscriptTooLongError
    from text.errors import InvalidTextError, TextTooLongError

    assert classify(InvalidAudioError("x")).code == "bad_audio"
    assert classify(TranscriptTooLongError("x")).code == "transcript_too_long"
    assert classify(TextTooLongError("x")).code == "text_too_long"
    assert classify(InvalidTextError("x")).code == classify(InvalidParameterError("x")).code == "bad_request"
    assert classify(ModelLoadError("x")).code == "internal"  # a fault, not the client's


def test_every_request_field_is_documented_on_each_front_end() -> None:
    synthesize = WS_DOC[WS_DOC.index("| `synthesize` |"):].splitlines()[0]
    assert all(f"`{name}`" in synthesize for name in SYNTHESIZE), synthesize
    http_fields = _rows(HTTP_DOC, "| field | type | default | |")
    assert set(SPEECH) <= set(http_fields), sorted(set(SPEECH) - set(http_fields))
    assert set(SYNTHESIZE) == set(SPEC) and set(JOB_INPUT) < set(SPEC)


def test_parse_types_and_defaults() -> None:
    wire = wire_names(rename={"text": "input"}, omit=("final",))
    request = parse({"input": "Hi.", "speed": 2, "seed": None, "marks": True}, wire, id="r1")
    assert request == StreamRequest(id="r1", text="Hi.", marks=True, synthesis={"speed": 2.0})
    for body, param in (({"input": "Hi.", "speed": True}, "speed"), ({"input": "Hi.", "nfe_steps": 2.5}, "nfe_steps"),
                        ({"input": 5}, "input"), ({}, "input"), ({"input": "Hi.", "normalize": 1}, "normalize")):
        with pytest.raises(ServiceError) as info:
            parse(body, wire, id="r1")
        assert (info.value.code, info.value.param, info.value.detail) == ("bad_request", param, "invalid_type")
    with pytest.raises(ValueError):
        wire_names(omit=("colour",))
