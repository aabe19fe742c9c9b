"""Errors that the command line reports as one clear line (no traceback)."""


class UserError(Exception):
    """Bad input from the user: a missing file, a corrupt image, an invalid option. The message names it."""
