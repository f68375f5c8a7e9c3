"""One error hierarchy, caught once at the CLI boundary (exit code 2)."""


class DrillError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


class UnknownExercise(DrillError):
    pass


class WorkspaceError(DrillError):
    pass


class ContentError(DrillError):
    """The catalog or the question bank does not match its schema."""


class DeviceUnavailable(DrillError):
    pass


class StoreError(DrillError):
    pass
