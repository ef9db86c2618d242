"""User-facing errors.

`RftError` is raised for every mistake a user can fix (bad file, unknown key, missing model). The CLI turns
it into a readable message and exit code 2; it never shows a traceback for these. Each error can carry the
file, line and field it is about, and several problems can be reported at once (`problems`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One problem found in user input: where it is and what was expected."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        fld = f"field '{self.field}': " if self.field else ""
        return f"{where}{fld}{self.message}"


@dataclass
class RftError(Exception):
    """An error the user can act on. `problems` lists every problem found, not just the first."""

    message: str
    problems: list[Problem] = field(default_factory=list)
    hint: str | None = None
    exit_code: int = 2

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        lines = [self.message]
        shown = self.problems[:50]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest option, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(dict):
    """A name -> object registry whose unknown names fail with the list of valid ones."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        def deco(obj):
            if name in self:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self[name] = obj
            return obj

        return deco

    def get_or_raise(self, name: str, *, where: Problem | None = None):
        if name not in self:
            valid = ", ".join(sorted(self))
            msg = f"unknown {self.kind} '{name}'{did_you_mean(name, list(self))}; valid: {valid}"
            raise RftError(msg, [where] if where else [])
        return self[name]
