"""Every report figure is written the same way: PNG and PDF on disk, the PNG inline in the page."""

from __future__ import annotations

import base64
import io
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from factrecall.artifacts import write_bytes


@contextmanager
def literal_text():
    """Figures drawn inside take every text literally: a name or token holding `$…$` is text, not mathtext
    (which would fail on it); and an axis shows its values, never an offset (a flat panel got "1e−17"). Every
    report figure is drawn inside one."""
    with matplotlib.rc_context({"text.parse_math": False, "axes.formatter.useoffset": False}):
        yield


def save_figure(fig, folder: Path, name: str) -> str:
    """Write `name`.png and .pdf; return the PNG as a data URI."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    pdf = io.BytesIO()
    fig.savefig(pdf, format="pdf", metadata={"CreationDate": None})  # the same figure, the same bytes
    plt.close(fig)
    write_bytes(folder / f"{name}.png", png.getvalue())
    write_bytes(folder / f"{name}.pdf", pdf.getvalue())
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
