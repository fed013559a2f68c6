"""The one exception type for mistakes a user can fix.

The CLI prints its message as a single line and exits non-zero; library callers can catch it.
"""

import difflib


class UserError(Exception):
    """A problem with the user's input: the message names the input and the fix."""


def closest(name: str, options) -> str:
    """A ' (did you mean X?)' suffix for an unknown name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def json_type(value) -> str:
    """What a JSON (or TOML) value is, in the words of the format: for messages on a file."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)
