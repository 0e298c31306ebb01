"""User-facing errors: one line that says what is wrong and how to fix it.

The CLI prints a ScoreError as a single line and exits non-zero, without a traceback; anything
else is a bug in score and keeps its traceback.
"""


class ScoreError(Exception):
    """A problem with the user's input or environment, phrased as 'what is wrong: how to fix it'."""
