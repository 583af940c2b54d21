"""The one exception type a user should ever see: it becomes a one-line message and exit 2."""


class GerminateError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM after a resumable checkpoint was written."""

    def __init__(self, run_dir: str):
        super().__init__(f"interrupted; resume with: germinate train --resume {run_dir}")
        self.run_dir = run_dir
