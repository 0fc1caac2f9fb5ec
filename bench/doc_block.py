"""The generated block of a doc page: each benchmark that writes its table into
``docs/performance.md`` keeps it between its own ``<!-- name:begin -->`` and
``<!-- name:end -->`` comments, so a re-run replaces exactly its own numbers."""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The begin / end comments of the block called ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the markers of block ``name`` in ``path`` (exit with one line
    when the page has no such block)."""
    begin, end = markers(name)
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"error: {path} has no {begin} ... {end} block")
    head, rest = doc.split(begin, 1)
    path.write_text(head + begin + "\n" + text + end + rest.split(end, 1)[1])
