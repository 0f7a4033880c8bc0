"""The message for a data file that is not UTF-8, with the command that converts it.

A file that starts with a byte-order mark says its encoding (UTF-16 or UTF-32, as Windows tools write "Unicode"
text); without one the encoding is unknown, and Latin-1 is the usual guess.
"""

import codecs
from pathlib import Path

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
GUESSED_ENCODING = "latin1"


def marked_encoding(path: str | Path) -> str | None:
    """The encoding named by the byte-order mark `path` starts with (`"UTF-16"`, `"UTF-32"`), or None."""
    with open(path, "rb") as f:
        start = f.read(max(len(mark) for mark, _ in BYTE_ORDER_MARKS))
    return next((encoding for mark, encoding in BYTE_ORDER_MARKS if start.startswith(mark)), None)


def not_utf8_error(path: str | Path, error: UnicodeDecodeError, what: str | None = None) -> ValueError:
    """A `ValueError` saying that `what` (default: the path) is not UTF-8 text and giving the `iconv` command that
    converts it: from the encoding its byte-order mark names, else from a guessed Latin-1."""
    path = Path(path)
    converted = path.with_name(f"{path.stem}.utf8{path.suffix}")
    encoding = marked_encoding(path)
    if encoding is not None:
        fix = f"it is {encoding} text (it starts with a {encoding} byte-order mark): convert it with"
        source = encoding
    else:
        fix, source = "convert it, e.g. with", GUESSED_ENCODING
    return ValueError(
        f"{what or path} is not UTF-8 text ({error.reason} at byte {error.start} of a block); {fix} "
        f"`iconv -f {source} -t UTF-8 {path} > {converted}` and give the converted file."
    )
