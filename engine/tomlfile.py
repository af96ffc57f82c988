"""Reading a TOML config file: the one strict reader, and a lenient one for emergencies.

Light on purpose (standard library only): the one-shot CLI reads the data directory from the
config without pulling in pydantic or the engine core, and ``cockpit kill`` must get what it can
from a config that is broken.
"""

from __future__ import annotations

import codecs
import re
import tomllib
from pathlib import Path
from typing import Any

# No real config comes near this; /dev/zero or a mistaken log file must not be read whole.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


class TomlFileError(Exception):
    """The file cannot be read as a TOML config; the message is one line naming the fix."""


def _read_bytes(path: Path) -> bytes:
    try:
        # A pipe nobody writes to would block the command for ever, a device never end.
        if not path.is_dir() and path.exists() and not path.is_file():
            raise TomlFileError(
                f"{path}: not a regular file (a pipe, device or socket); pass --config PATH "
                "to a TOML file"
            )
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise TomlFileError(
            f"{path}: no such config file; pass --config PATH to an existing file"
        ) from None
    except IsADirectoryError:
        raise TomlFileError(f"{path}: is a directory; pass --config PATH to a TOML file") from None
    except OSError as exc:
        raise TomlFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise TomlFileError(
            f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB; not a config file"
        )
    return raw


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed document, or TomlFileError with one line saying what is wrong."""
    path = Path(path)
    raw = _read_bytes(path)
    if raw.startswith(codecs.BOM_UTF8):
        # Invisible in an editor, and tomllib's answer ("Invalid statement (at line 1,
        # column 1)") pointed at a line that looks right.
        raise TomlFileError(
            f"{path}: starts with a byte-order mark (BOM), which TOML does not allow; save the "
            "file as UTF-8 without BOM"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        guess = _encoding_of(raw)
        hint = f" (it looks like {guess})" if guess else ""
        raise TomlFileError(f"{path}: not UTF-8 text{hint}; save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlFileError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        raise TomlFileError(
            f"{path}: not a config (arrays or tables nested too deeply to read)"
        ) from None


def _encoding_of(raw: bytes) -> str:
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if raw.startswith(bom):
            return name
    return ""


_SECTION = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_STRING_KEY = re.compile(r"""^\s*([A-Za-z0-9_-]+)\s*=\s*(?:"([^"\\]*)"|'([^']*)')\s*(#.*)?$""")


def salvage_strings(path: str | Path) -> dict[tuple[str, ...], str]:
    """Plain string values (``[section]`` + ``key = "value"``) found line by line in a file that
    may not parse: UTF-16/32 is decoded by its byte-order mark, lines that make no sense are
    skipped. For finding an engine in an emergency only; never for configuring one."""
    try:
        raw = _read_bytes(Path(path))
    except TomlFileError:
        return {}
    encoding = {"UTF-16": "utf-16", "UTF-32": "utf-32"}.get(_encoding_of(raw), "utf-8-sig")
    text = raw.decode(encoding, errors="replace")
    found: dict[tuple[str, ...], str] = {}
    section: tuple[str, ...] = ()
    for line in text.splitlines():
        if m := _SECTION.match(line):
            section = tuple(p.strip().strip("\"'") for p in m.group(1).split("."))
        elif m := _STRING_KEY.match(line):
            value = m.group(2) if m.group(2) is not None else m.group(3)
            found.setdefault((*section, m.group(1)), value)
    return found
