"""Progress bars that suit where they are read: tqdm's bar on a terminal (or a notebook's widget); in a file or a
pipe (a study's log, a sweep point's `logs/point-<id>.log`) the same bar as a plain line at most every
`LOG_INTERVAL` seconds, so that a log holds readable lines instead of thousands of carriage-return redraws."""

from __future__ import annotations

import sys

from tqdm.autonotebook import tqdm as auto_tqdm  # a notebook's widget bar there, else std's
from tqdm.std import tqdm as std_tqdm

LOG_INTERVAL = 30.0  # seconds between a bar's lines when it does not go to a terminal


class _Lines:
    """A text stream that writes each of tqdm's redraws as one whole line (its clearing writes as nothing)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, **kwargs):
    """`tqdm(iterable, **kwargs)` on a terminal or in a notebook; elsewhere the same bar, as periodic lines."""
    stream = kwargs.pop("file", None) or sys.stderr
    if auto_tqdm is not std_tqdm or stream.isatty():  # a notebook widget, or a terminal
        return auto_tqdm(iterable, file=stream, **kwargs)
    return std_tqdm(iterable, file=_Lines(stream), mininterval=LOG_INTERVAL, ncols=100, **kwargs)
