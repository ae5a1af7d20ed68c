"""The one exception type for mistakes a user can fix: launch.py prints it as one line, exit code 2."""


class UserError(Exception):
    """Bad input (config, paths, prompts, models). The message is shown to the user as is."""
