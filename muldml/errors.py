"""The one exception type for problems a user can fix (bad data, paths, options)."""


class UserError(Exception):
    """A problem with the user's input; the CLI prints its message alone and exits 2."""
