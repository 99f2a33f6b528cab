"""The docs' examples, written out in the pages so that they read anywhere (GitHub shows a page's
Markdown as it is): each example follows a marker that names the file section it copies, and
this script rewrites every copy from its source. The tests check that each copy is its source
word for word, so an example in the docs is always code the tests run.

    python docs/snippets.py           # refresh every copy
    python docs/snippets.py --check   # say which copies differ (exit 1)

A marker is ``<!-- snippet: PATH[:SECTION] -->``: the fenced block after it (or, for a Markdown
file, everything up to ``<!-- /snippet -->``) is the section of PATH between its
``# --8<-- [start:SECTION]`` and ``# --8<-- [end:SECTION]`` lines (the whole file without one).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- snippet: ([^:\s]+)(?::([\w-]+))? -->\n", re.M)
FENCED = re.compile(r"(```\w*\n)(.*?)(^```)", re.S | re.M)
END = "<!-- /snippet -->"


def section(path: Path, name: str | None) -> str:
    """A file's section (the whole file without a name)."""
    text = path.read_text()
    if name is None:
        return text
    match = re.search(
        rf"^\s*# --8<-- \[start:{name}\]\n(.*?)^\s*# --8<-- \[end:{name}\]", text, re.S | re.M
    )
    if not match:
        raise ValueError(f"{path}: no section {name!r}")
    return match.group(1)


def expand(page: str) -> str:
    """The page with every copy rewritten from its source."""
    out, at = [], 0
    for marker in MARKER.finditer(page):
        out.append(page[at : marker.end()])
        source = section(ROOT / marker.group(1), marker.group(2))
        rest = page[marker.end() :]
        if marker.group(1).endswith(".md"):
            end = rest.index(END)
            out.append(source.rstrip("\n") + "\n")
            at = marker.end() + end
        else:
            fence = FENCED.match(rest)
            if fence is None:
                raise ValueError(f"no fenced block after {marker.group(0).strip()}")
            out.append(fence.group(1) + source.rstrip("\n") + "\n" + fence.group(3))
            at = marker.end() + fence.end()
    return "".join(out) + page[at:]


def pages() -> list[Path]:
    return [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def main(argv: list[str]) -> int:
    stale = []
    for page in pages():
        text = page.read_text()
        fresh = expand(text)
        if fresh != text:
            stale.append(page.relative_to(ROOT).as_posix())
            if "--check" not in argv:
                page.write_text(fresh)
    if stale:
        print(("stale: " if "--check" in argv else "refreshed: ") + ", ".join(stale))
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
