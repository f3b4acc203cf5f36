"""The one error type a user sees: a list of one-line problems, printed without a traceback."""


class RecipeError(Exception):
    """Problems with the recipe or its data, found before anything is trained or written."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        # One line per problem, whatever a library's message looked like.
        self.problems = [" ".join(part.strip() for part in str(p).splitlines() if part.strip()) for p in problems]
        super().__init__("\n".join(self.problems))
