"""The one base of every error a user can fix (a config key, an input file, missing weights,
an unreachable tracking server): its message says what is wrong and where. Stage entry points
print it as one line prefixed with the stage's name, instead of a traceback; anything else is
a bug and keeps its traceback."""


class PipelineError(Exception):
    """A user-facing problem whose message names the key, file or service at fault."""
