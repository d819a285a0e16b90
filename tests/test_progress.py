"""Progress bars (`factrecall.progress`): a terminal gets tqdm's bar; a log gets whole lines, never carriage
returns, at most one per LOG_INTERVAL after the first."""

import io
import time

from factrecall import progress as module
from factrecall.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_few_whole_lines(monkeypatch):
    monkeypatch.setattr(module, "LOG_INTERVAL", 0.05)
    log, start = io.StringIO(), time.monotonic()
    for _ in progress(range(40), desc="train", file=log, leave=False):
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and all(line.startswith("train:") for line in lines)
    assert 2 <= len(lines) <= elapsed / 0.05 + 2  # the first draw, then one per interval at most


def test_a_terminal_gets_the_bar_redrawn_in_place():
    screen = Terminal()
    for _ in progress(range(5), desc="train", file=screen, mininterval=0):
        pass
    assert "\r" in screen.getvalue() and "5/5" in screen.getvalue()
