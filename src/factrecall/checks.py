"""The one validation kit of the config dataclasses (`DataConfig`, `TrainConfig`, `AnalysisConfig`): a setting
out of its range is refused in one line that names `section.key`, what it must be, what it got and what to do."""

from __future__ import annotations

import math
from collections.abc import Callable

from factrecall.errors import UserError


def is_int(value) -> bool:
    """An int (never a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A finite int or float (never NaN, infinity or a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def checker(config, section: str, options: tuple[str, ...] = ()) -> Callable[..., None]:
    """must(ok, key, rule, hint=""): unless `ok`, raise "`section`.key[: --key] must `rule` (got value)[; hint]";
    `options`: the keys that are command-line options too (named as such in the message)."""
    def must(ok: bool, key: str, rule: str, hint: str = "") -> None:
        if not ok:
            option = f": --{key.replace('_', '-')}" if key in options else ""
            raise UserError(f"{section}.{key}{option} must {rule} (got {getattr(config, key)!r}){hint and '; ' + hint}")
    return must
