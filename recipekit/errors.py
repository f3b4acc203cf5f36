"""The one error type a user sees: a list of one-line problems, printed without a traceback."""


class RecipeError(Exception):
    """Problems with the recipe or its data, found before anything is trained or written."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
