"""Sphinx configuration of the ptyscope documentation (Markdown pages, MyST).

Build: ``make docs`` (``sphinx -W``: any warning fails the build, and CI runs it).

The config reference is generated from the pydantic models at build time: in
``config_reference.md`` every line ``<!-- config-reference: Model | title -->`` is replaced,
when Sphinx reads the page, by ``ptyscope.config_docs.reference_markdown(Model, title=...)``
with its headings moved one level down. Nothing generated is written into the source tree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # the checkout's ptyscope, installed or not

import ptyscope  # noqa: E402
from ptyscope import config as ptyscope_config  # noqa: E402
from ptyscope import config_docs  # noqa: E402

project = "ptyscope"
author = "ptyscope developers"
copyright = "ptyscope developers"
release = ptyscope.__version__
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve
myst_enable_extensions = ["colon_fence"]

smartquotes = False  # keep "off" and '--device' as typed: they are copied into configs
html_theme = "alabaster"
html_title = f"ptyscope {release}"
html_theme_options = {
    "description": "3D and 4D electron ptychography from 4D-STEM data",
    "fixed_sidebar": True,
}

_MARKER = re.compile(r"^<!-- config-reference: (?P<model>\w+) \| (?P<title>.+?) -->$", re.M)


def _demote(markdown: str) -> str:
    """Move every heading one level down (outside code fences)."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines)


def _config_reference(app: Any, docname: str, source: list[str]) -> None:
    """Fill the config reference page with the Markdown generated from the models."""
    if docname != "config_reference":
        return

    def generate(match: re.Match[str]) -> str:
        model = getattr(ptyscope_config, match["model"], None)
        if model is None:
            raise ValueError(f"config_reference.md names an unknown model {match['model']!r}")
        return _demote(config_docs.reference_markdown(model, title=match["title"]))

    text, count = _MARKER.subn(generate, source[0])
    if count == 0:
        raise ValueError("config_reference.md has no '<!-- config-reference: ... -->' marker")
    source[0] = text
    # Re-read this page whenever the models or the generator change.
    app.env.note_dependency(ptyscope_config.__file__)
    app.env.note_dependency(config_docs.__file__)


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _config_reference)
    return {"parallel_read_safe": True}
