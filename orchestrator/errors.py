"""What ends a command with one line and exit code 1: a service it needs stayed away (the local Ray,
the cluster's resources, the tracking server). Not the user's mistake (exit 2), not our bug (a
traceback). Light on purpose: ``cli.run`` catches it before anything heavy is imported."""


class Unavailable(RuntimeError):
    """A service the command needs did not answer in time; rerunning the same command resumes."""
