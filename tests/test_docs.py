"""The documentation stays true to the code: the README's op table names only ops that are
registered and documented in mnv3ext.ops (the authoritative reference), relative links and their
anchors resolve, the README stays short, and no document, comment or output refers to
development sessions instead of dates, machines and commands."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import mnv3ext
import mnv3ext.ops

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

pytestmark = pytest.mark.skipif(not README.is_file(), reason="no README.md next to tests/ (not a source checkout)")


def _readme_op_names():
    text = README.read_text(encoding="utf-8")
    section = text.split("### The ops", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(?:torch\.ops\.mnv3ext\.)?(\w+)(?:\(.*?\))?` \|", section, flags=re.M)


def test_readme_op_table_names_registered_documented_ops():
    names = _readme_op_names()
    assert len(names) >= 6, names  # the table was found and parsed
    doc = mnv3ext.ops.__doc__
    for name in names:
        assert hasattr(torch.ops.mnv3ext, name), f"README lists {name}, not registered under torch.ops.mnv3ext"
        assert re.search(r"``" + name + r"\(", doc), f"README lists {name}, not documented in mnv3ext.ops' docstring"


def test_readme_length():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move detail into docs/"


def _slug(heading: str) -> str:
    # GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
    heading = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _anchors(path: Path):
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", path.read_text(encoding="utf-8"), flags=re.M)}


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.exists(), f"{doc.name}: link to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{doc.name}: no heading for #{anchor} in {dest.name}"


# "session 3", "sessions 2-4", "end of session", "this session": development history, which
# means nothing outside the repository. (ONNX Runtime's inference sessions are fine.)
_SESSION = re.compile(
    r"\bsessions?[ -]\d|\b(?:this|that|previous|next|last|earlier|same) session\b|end[ -]of[ -](?:the[ -])?session",
    re.I,
)
_SCANNED = ("README.md", "docs/*.md", "bench/README.md", "mnv3ext/**/*.py", "bench/**/*.py",
            "bench/cpp/*", "csrc/**/*", "tests/**/*.py", "tools/**/*", "cmake/*", ".ci/run",
            "CMakeLists.txt", "pyproject.toml")


def test_no_references_to_development_sessions():
    hits = []
    for pattern in _SCANNED:
        for path in ROOT.glob(pattern):
            if not path.is_file() or path.resolve() == Path(__file__).resolve():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if _SESSION.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "say when and where it was measured instead:\n" + "\n".join(hits)
