"""The one exception type the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input the user can fix: a recipe field, a missing file, a missing model.

    The message is printed as-is, on one line, without a traceback.
    """
