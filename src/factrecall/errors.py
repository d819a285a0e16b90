"""The one exception type users see.

A `UserError` carries a single line: what was wrong, where, and what to do. The CLI prints
it and exits with code 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user (arguments, files, directories). Message is one line."""
