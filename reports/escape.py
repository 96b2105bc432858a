"""Text from data (names, prompts, outputs, file paths) on its way into HTML or a plot label.

Both escape ``&``, ``<`` and ``>``, so such text shows literally and never becomes markup or
script. Plotly draws labels from a small HTML subset and decodes only a few entities
(``&lt;``, ``&gt;``, ``&amp;``...), not ``&quot;``: plot text keeps its quotes as they are,
which is safe there because without ``<`` no tag (and so no attribute) can start.
"""

from __future__ import annotations

import html


def esc(value: object) -> str:
    """For HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def plot_text(value: object) -> str:
    """For plotly titles, tick labels, legend entries and hover text."""
    return html.escape(str(value), quote=False)
