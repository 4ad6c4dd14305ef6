"""The one request specification: every field a synthesis request can carry, with its JSON type, default,
range and meaning, and the parser every front end is built from.

The fields are ``StreamRequest``'s own (text, voice, final, normalize, lang, marks, id) and the synthesis
parameters of ``engine.params.SynthesisParams`` (speed, nfe_steps, cfg_strength, sway_sampling_coef,
seed: their defaults and ranges are the engine's). A new field is one field in one of those two
dataclasses: every front end then accepts it under its own name. A front end keeps only its wire names::

    WS = wire_names(omit=())                                # every field, named as here
    HTTP = wire_names(rename={"text": "input"}, omit=("id", "cfg_strength", ...))
    request = parse(body, HTTP, id="http-1")                # raises ServiceError("bad_request", param=...)

``parse`` checks types (a JSON number is no bool; null is the same as absent) and fills defaults; ranges
are checked once for every front end, by the service (``SynthesisParams.check``), which names the field
at fault in ``param`` and ``invalid_<field>``.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from engine import SynthesisParams, Voice
from server.core.errors import ServiceError

STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""A client-chosen stream id (WebSocket): 1-128 characters, letters, digits and ``._:-``, starting with a
letter or digit; always fullmatch (``$`` would accept a trailing newline). Ids reach log lines and
metrics labels' neighbours, so nothing that could forge a line or a field gets in."""


def _field(doc: str, default: Any = None, *, required: bool = False) -> Any:
    if required:
        return field(metadata={"doc": doc, "required": True})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class StreamRequest:
    """A synthesis request as every front end hands it to the service."""

    id: str = _field("the request's id: client-chosen on the WebSocket (see STREAM_ID), made up elsewhere",
                     required=True)
    text: str = _field("the text to speak (plain, or an SSML document)", required=True)
    voice: str | Voice = field(default="default", metadata={"doc": "a voice id or alias (see GET /v1/voices); a "
                                                                    "front end may prepare a Voice itself (RunPod's "
                                                                    "inline voices)"})
    final: bool = _field("false: an incremental stream, fed later through append/flush/end", True)
    normalize: bool = _field("write numbers, dates, symbols... out as words before synthesis", True)
    lang: str = _field("language of the text for normalisation ('en', 'zh', ...); 'auto' detects it", "auto")
    marks: bool = _field("report which text each stretch of audio speaks (ChunkMarks events)", False)
    synthesis: Mapping[str, float | int] = field(default_factory=lambda: MappingProxyType({}))
    """The synthesis parameters the client gave, by ``SynthesisParams`` field name; absent ones take
    their defaults (``SynthesisParams.build``)."""


@dataclass(frozen=True)
class FieldSpec:
    """One request field, as a parser sees it."""

    name: str
    types: tuple[type, ...]
    """The JSON types accepted (a bool is never a number)."""
    default: Any
    """The value when absent or null (``nfe_steps`` and ``seed``: the server's default, a random seed)."""
    required: bool
    doc: str
    bounds: tuple[float, float] | None = None
    """The range the service checks (synthesis parameters)."""
    synthesis: bool = False
    """A ``SynthesisParams`` field: it travels in ``StreamRequest.synthesis``."""

    @property
    def type_name(self) -> str:
        """How a message names the JSON type."""
        return _TYPE_NAMES[self.types]


_JSON_TYPES: dict[type, tuple[type, ...]] = {str: (str,), bool: (bool,), int: (int,), float: (int, float)}
_TYPE_NAMES = {(str,): "a string", (bool,): "true or false", (int,): "an integer", (int, float): "a number"}


def _spec() -> dict[str, FieldSpec]:
    hints = typing.get_type_hints(StreamRequest) | typing.get_type_hints(SynthesisParams)
    spec = {f.name: FieldSpec(f.name, _json_types(hints[f.name]), None if f.metadata.get("required") else f.default,
                              bool(f.metadata.get("required")), f.metadata["doc"])
            for f in fields(StreamRequest) if f.name != "synthesis"}
    for f in fields(SynthesisParams):
        spec[f.name] = FieldSpec(f.name, _json_types(hints[f.name]), f.default, False, f.metadata["doc"],
                                 f.metadata["bounds"], synthesis=True)
    return spec


def _json_types(hint: Any) -> tuple[type, ...]:
    """``str | Voice`` travels as its first type (a voice id)."""
    return _JSON_TYPES[typing.get_args(hint)[0] if typing.get_args(hint) else hint]


SPEC: Mapping[str, FieldSpec] = MappingProxyType(_spec())
"""Every request field by name; docs/protocol.md and docs/http-api.md describe them on the wire."""


def wire_names(rename: Mapping[str, str] | None = None, omit: Collection[str] = ()) -> dict[str, str]:
    """A front end's wire names → spec field names: every field under its own name, except those in
    ``rename`` (field → wire name) and those the front end does not take (``omit``)."""
    rename = rename or {}
    unknown = (set(rename) | set(omit)) - set(SPEC)
    if unknown:
        raise ValueError(f"not request fields: {', '.join(sorted(unknown))}")
    return {rename.get(name, name): name for name in SPEC if name not in omit}


def quoted(name: str) -> str:
    """The default way a message names a wire field: ``'speed'``."""
    return f"'{name}'"


def parse(data: Mapping[str, Any], wire: Mapping[str, str], *, label: Callable[[str], str] = quoted,
          **given: Any) -> StreamRequest:
    """A front end's request mapping → ``StreamRequest``: every wire field in ``wire`` that ``data`` holds is
    type-checked (null counts as absent) and converted; fields in ``given`` (by spec name: what the front end
    worked out itself, e.g. ``id`` or a prepared ``voice``) are taken as they are; the rest get their defaults.
    Unknown wire fields are the front end's business (``unknown_fields``). Raises ``ServiceError`` (bad_request,
    ``param`` = the wire name, ``detail`` = invalid_type) naming the field with ``label``."""
    values: dict[str, Any] = {}
    synthesis: dict[str, float | int] = {}
    for wire_name, name in wire.items():
        if name in given:
            continue
        value = typed(data, wire_name, name, label)
        if value is not None:
            (synthesis if SPEC[name].synthesis else values)[name] = value
    values.update(given)
    if "synthesis" not in given:
        values["synthesis"] = MappingProxyType(synthesis)
    return StreamRequest(**values)


def unknown_fields(data: Mapping[str, Any], wire: Mapping[str, str], own: Collection[str] = ()) -> list[str]:
    """The fields of ``data`` that are neither request fields of this front end nor its ``own``, sorted."""
    return sorted(set(data) - set(wire) - set(own))


def typed(data: Mapping[str, Any], wire_name: str, name: str, label: Callable[[str], str] = quoted) -> Any:
    """The value of the spec field ``name`` sent as ``wire_name``, type-checked (a JSON number for a float
    field becomes a float); None when absent or null. Raises ``ServiceError`` as ``parse`` does."""
    spec = SPEC[name]
    value: Any = data.get(wire_name)
    if value is None:
        if spec.required:
            raise ServiceError("bad_request", f"{label(wire_name)} is required", param=wire_name,
                               detail="invalid_type")
        return None
    if type(value) not in spec.types:  # exact: a bool is no number
        raise ServiceError("bad_request", f"{label(wire_name)} must be {spec.type_name}", param=wire_name,
                           detail="invalid_type")
    return float(value) if spec.types == (int, float) else value
