"""The one error type a user sees: a list of one-line problems, printed without a traceback."""


# A problem line is cut here, whatever a value or a library's message held (a YAML alias bomb made 312 MB).
MAX_PROBLEM_CHARS = 2000


def one_line(problem) -> str:
    line = " ".join(part.strip() for part in str(problem).splitlines() if part.strip())
    if len(line) > MAX_PROBLEM_CHARS:
        line = f"{line[:MAX_PROBLEM_CHARS]}... (cut; {len(line):,} characters in all)"
    return line


class RecipeError(Exception):
    """Problems with the recipe or its data, found before anything is trained or written."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        # One line per problem, whatever a library's message looked like.
        self.problems = [one_line(p) for p in problems]
        super().__init__("\n".join(self.problems))


class OwnError(RecipeError):
    """A problem only this process may meet (a record in its own shard of a stream, its own node's full disk):
    in a multi-process launch it is printed by this process too, since process 0 may not have met it. Every
    other RecipeError is one that every process finds alike, printed once, by process 0."""


class LostRank(RecipeError):
    """Another process of a multi-process launch died, or stopped on a problem only it met (a bad row in its
    own shard): every process says so (not only process 0), since the one that stopped may have been process 0,
    and process 0 does not see another's problem."""
