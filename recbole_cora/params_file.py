"""A search space in RecBole's params-file format: ``name kind values`` a line (choice, uniform, quniform,
loguniform), read and checked line by line (``read_params_file``), and how a budget of trials searches it."""

import ast
import math
from dataclasses import dataclass
from pathlib import Path

KINDS = ("choice", "uniform", "quniform", "loguniform")


class ParamsFileError(ValueError):
    """A params file that cannot be searched; the message names the file, the line and what to do."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    values: tuple  # choice: the values; uniform / loguniform: (low, high); quniform: (low, high, q)

    def extremes(self):
        """The values a trial can take at the ends of its range (every one for a choice)."""
        if self.kind == "choice":
            return list(self.values)
        low, high = self.values[0], self.values[1]
        if self.kind == "quniform":
            return [self._whole(low), self._whole(low + self.values[2] * math.floor((high - low) / self.values[2]))]
        return [math.exp(low), math.exp(high)] if self.kind == "loguniform" else [low, high]

    def _whole(self, value):
        """A quniform value as a trial gets it: a whole number where the range and the step are whole."""
        whole = float(value).is_integer() and all(float(v).is_integer() for v in self.values)
        return int(value) if whole else value

    def suggest(self, trial):
        if self.kind == "choice":  # Optuna keeps plain values; a list or dict travels as its repr
            picked = trial.suggest_categorical(self.name, [plain_value(v) for v in self.values])
            return ast.literal_eval(picked) if isinstance(picked, str) and picked[:1] in "[{(" else picked
        low, high = self.values[0], self.values[1]
        if self.kind == "uniform":
            return trial.suggest_float(self.name, low, high)
        if self.kind == "quniform":
            return self._whole(trial.suggest_float(self.name, low, high, step=self.values[2]))
        return trial.suggest_float(self.name, math.exp(low), math.exp(high), log=True)


def plain_value(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def read_params_file(path):
    """``{name: Param}`` from a RecBole params file; a ``ParamsFileError`` names the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ParamsFileError(f"params file '{path}' does not exist.")
    params = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"params file '{path}' line {number} ({raw.strip()!r})"
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise ParamsFileError(f"{where}: write `name kind values`, e.g. `learning_rate loguniform -8,0`.")
        name, kind, text = parts[0], parts[1], parts[2].replace(" ", "")
        if kind not in KINDS:
            raise ParamsFileError(f"{where}: kind '{kind}' is unknown; use one of {', '.join(KINDS)}.")
        if name in params:
            raise ParamsFileError(f"{where}: '{name}' is given twice.")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ParamsFileError(f"{where}: '{text}' is not a Python literal"
                                  + (" list, e.g. [32,64]." if kind == "choice" else " pair of numbers, e.g. 0.1,0.5."))
        if kind == "choice":
            if not isinstance(value, list) or not value:
                raise ParamsFileError(f"{where}: a choice takes a non-empty list, e.g. [32,64,128].")
            params[name] = Param(name, kind, tuple(value))
            continue
        size = 3 if kind == "quniform" else 2
        if (not isinstance(value, tuple) or len(value) != size
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ParamsFileError(f"{where}: {kind} takes {size} numbers, e.g. "
                                  + ("1,4,1 (low, high, step)." if size == 3 else "0.1,0.5 (low, high)."))
        if value[0] >= value[1] or (size == 3 and value[2] <= 0):
            raise ParamsFileError(f"{where}: give low < high" + (" and a step above 0." if size == 3 else "."))
        params[name] = Param(name, kind, tuple(float(v) for v in value))
    if not params:
        raise ParamsFileError(f"params file '{path}' names no option: write one `name kind values` a line.")
    return params


def grid_size(params):
    return math.prod(len(p.values) for p in params.values())


def budget_search(params, budget):
    """``(trials, algo)`` for a budget of ``budget`` trials: the whole grid where it is a grid of choices no larger
    than the budget, else ``budget`` random draws (distinct grid points for choices)."""
    if all(p.kind == "choice" for p in params.values()) and grid_size(params) <= budget:
        return grid_size(params), "exhaustive"
    return budget, "random"
