"""Inline SVG plots for Tact's self-contained HTML reports (matplotlib, no external files).

Text stays text (``svg.fonttype = none``) in the page's own font stack, so the files load no
fonts; ids are salted per report so the output is reproducible.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; }
td { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f4f4f4; }
figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
.warning { background: #fff4e5; border-left: 4px solid #e67e22; padding: 0.5em 1em; }
"""
"""The pages' stylesheet, inlined in each file."""


@contextmanager
def svg_figures(salt: str) -> Iterator[None]:
    """Draw with matplotlib's headless backend and reproducible SVG ids."""
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        yield


def svg(figure: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, doctype or metadata)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
