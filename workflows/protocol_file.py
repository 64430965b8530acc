"""Reading a clinic file (TOML, YAML or JSON) into a :class:`ClinicProtocol`, with one readable
line per problem. The only part of the protocol that does I/O; never used by workflow code.
:mod:`workflows.protocol` re-exports these names.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from workflows.protocol import ClinicProtocol

__all__ = ["ProtocolFileError", "clinic_protocol_from_dict", "load_clinic_protocol"]

SECTIONS_ELSEWHERE = frozenset({"scheduling", "messaging"})
"""Top-level sections of a clinic file read by other modules, left out of the protocol:
``scheduling`` (:func:`scheduling.resources.scheduling_from_file`)."""


class ProtocolFileError(ValueError):
    """A clinic file or settings mapping that cannot be used.

    ``str(error)`` is one readable line per problem, each naming the source, the field path
    and the rule; ``problems`` holds the same lines as a list.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class reached by following ``loc`` from :class:`ClinicProtocol`."""
    model: type[BaseModel] = ClinicProtocol
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _describe_errors(error: ValidationError, source: str) -> list[str]:
    lines: list[str] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            owner = _model_at(loc[:-1])
            allowed = ", ".join(owner.model_fields) if owner is not None else ""
            text = "unknown key" + (f"; allowed keys here: {allowed}" if allowed else "")
        else:
            text = item["msg"]
            if text.startswith("Value error, "):
                text = text.removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {text}")
    return lines


def clinic_protocol_from_dict(data: Any, *, source: str = "clinic settings") -> ClinicProtocol:
    """Validate a mapping with top-level keys ``clinic`` and ``protocol``.

    Args:
        data: The parsed mapping (``None`` means all defaults).
        source: Name used at the start of each error line (the file name when loading).

    Returns:
        The validated, frozen :class:`ClinicProtocol`.

    Raises:
        ProtocolFileError: One line per problem: ``<source>: <field.path>: <rule>``.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolFileError(
            [f"{source}: (top level): must be a mapping with [clinic] and [protocol] tables"]
        )
    # The ``[scheduling]`` section (resources, hours, closures: docs/scheduling.md) belongs to
    # scheduling.resources, not to the protocol that every journey's history carries.
    data = {key: value for key, value in data.items() if key not in SECTIONS_ELSEWHERE}
    try:
        return ClinicProtocol.model_validate(data)
    except ValidationError as error:
        raise ProtocolFileError(_describe_errors(error, source)) from None


def load_clinic_protocol(path: str | Path) -> ClinicProtocol:
    """Read a clinic file: ``.toml``, ``.yaml``/``.yml`` or ``.json``.

    Layout: top-level tables ``[clinic]`` (:class:`ClinicSettings`) and ``[protocol]``
    (:class:`Protocol`, with ``[protocol.screening]``); both optional, unknown keys refused.
    A ``[scheduling]`` table is accepted and left out (read by ``scheduling.resources``).
    This is the only function of ``workflows`` that does I/O; never call it in workflow code.

    Raises:
        ProtocolFileError: The file is missing or unreadable, not valid in its format, has an
            unknown extension, or fails validation; one line per problem naming the file.
    """
    file = Path(path)
    source = str(file)
    suffix = file.suffix.lower()
    if suffix not in {".toml", ".yaml", ".yml", ".json"}:
        raise ProtocolFileError(
            [f"{source}: unknown file type {suffix or '(none)'!r}; use .toml, .yaml, .yml or .json"]
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ProtocolFileError([f"{source}: cannot read the file: {reason}"]) from None
    import yaml  # imported here: only the file loader needs it, workflow code never does

    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        raise ProtocolFileError([f"{source}: not valid {suffix[1:].upper()}: {detail}"]) from None
    return clinic_protocol_from_dict(data, source=source)
