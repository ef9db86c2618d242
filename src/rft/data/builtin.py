"""Built-in datasets, named `builtin:<name>[/<task>][?split=..&n=..&seed=..]`.

What: generators registered by name (`@register_builtin("arithmetic")`) that make rows in the same format as a
JSONL data file, so a first run needs no data at all. `builtin:arithmetic` is single-digit `+`/`*` questions
with a validation set that never repeats a training question; `builtin:reasoning_gym/<task>` adapts any
reasoning-gym task (see `rft.data.reasoning_gym_tasks`).
Simplified: every generator is deterministic in (split, n, seed) and holds its rows in memory; no caching.
How to run: `python -c "from rft.data import load_dataset as l; print(l('builtin:arithmetic?n=3').rows)"`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from rft.data.dataset import Dataset, fingerprint
from rft.errors import Registry, RftError, did_you_mean

PREFIX = "builtin:"
SPLITS = {"train": "train", "validation": "validation", "val": "validation", "test": "validation"}
OPTIONS = ("split", "n", "seed")


@dataclass(frozen=True)
class BuiltinRequest:
    """What a generator is asked for. `task` is the part after '/' (`reasoning_gym/<task>`), else None.
    `n` and `seed` are None when the user left them out; each generator picks its own per-split defaults."""

    name: str
    task: str | None
    split: str  # "train" | "validation"
    n: int | None
    seed: int | None
    # Further `key=value` query options, in the order given; only families registered with `options=True`
    # (reasoning_gym: the task's config fields) get any, and their generator validates them.
    options: tuple[tuple[str, str], ...] = ()


# A generator returns (rows, resolved n, resolved seed); the resolved values go into Dataset.source.
Generator = Callable[[BuiltinRequest], "tuple[list[dict[str, Any]], int, int]"]
BUILTINS: Registry = Registry("built-in dataset")
# name -> function listing the tasks of a family (`reasoning_gym` -> its task names); absent for plain datasets.
TASK_LISTERS: dict[str, Callable[[], list[str]]] = {}
# name -> function(task or None) -> a one-line description (`rft data list`); absent: the generator's docstring.
DESCRIBERS: dict[str, Callable[[str | None], str]] = {}
# names whose generators accept further `key=value` query options (BuiltinRequest.options).
TAKES_OPTIONS: set[str] = set()


def register_builtin(name: str, *, tasks: Callable[[], list[str]] | None = None,
                     describe: Callable[[str | None], str] | None = None, options: bool = False):
    """Register a generator as `builtin:<name>`; `tasks` makes it a family addressed as `builtin:<name>/<task>`;
    `describe(task)` gives the one-line description `rft data list` shows (default: the docstring's first line);
    `options=True`: query keys other than split/n/seed go to the generator (`BuiltinRequest.options`)."""

    def deco(fn: Generator) -> Generator:
        BUILTINS.register(name)(fn)
        if tasks is not None:
            TASK_LISTERS[name] = tasks
        if describe is not None:
            DESCRIBERS[name] = describe
        if options:
            TAKES_OPTIONS.add(name)
        return fn

    return deco


def _first_line(doc: str | None) -> str:
    return next((ln.strip() for ln in (doc or "").strip().splitlines() if ln.strip()), "")


def builtin_catalog() -> list[dict[str, str]]:
    """Every built-in dataset as `{"ref", "name", "family", "description"}`, in `list_builtins` order; the
    description is one line."""
    out = []
    for name in sorted(BUILTINS):
        describe = DESCRIBERS.get(name) or (lambda task, _fn=BUILTINS[name]: _first_line(_fn.__doc__))
        for task in TASK_LISTERS[name]() if name in TASK_LISTERS else [None]:
            ref = f"{PREFIX}{name}" + (f"/{task}" if task else "")
            out.append({"ref": ref, "name": task or name, "family": name, "description": describe(task)})
    return out


def list_builtins() -> list[str]:
    """Every built-in dataset reference, e.g. `builtin:arithmetic`, `builtin:reasoning_gym/leg_counting`."""
    out = []
    for name in sorted(BUILTINS):
        if name in TASK_LISTERS:
            out += [f"{PREFIX}{name}/{t}" for t in TASK_LISTERS[name]()]
        else:
            out.append(f"{PREFIX}{name}")
    return out


def normalize_split(split: str) -> str:
    if split not in SPLITS:
        raise RftError(
            f"unknown split '{split}'{did_you_mean(split, list(SPLITS))}; valid: train, validation (aliases val, test)"
        )
    return SPLITS[split]


def _int_option(ref: str, key: str, value: str, minimum: int | None) -> int:
    try:
        v = int(value)
    except ValueError:
        raise RftError(f"{ref}: option '{key}' must be an integer, got '{value}'") from None
    if minimum is not None and v < minimum:
        raise RftError(f"{ref}: option '{key}' must be at least {minimum}, got {v}")
    return v


def parse_ref(ref: str, *, split: str = "train", n: int | None = None, seed: int | None = None) -> BuiltinRequest:
    """Parse `builtin:name[/task][?k=v&...]`; query options override the keyword arguments."""
    if not ref.startswith(PREFIX):
        raise RftError(f"'{ref}' is not a built-in dataset reference (they start with '{PREFIX}')")
    body, _, query = ref[len(PREFIX):].partition("?")
    seen: set[str] = set()
    extra: list[tuple[str, str]] = []
    takes_options = body.partition("/")[0] in TAKES_OPTIONS
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if takes_options and eq and key and key not in OPTIONS:
            if key in seen:
                raise RftError(f"{ref}: option '{key}' is given twice")
            seen.add(key)
            extra.append((key, value))
            continue
        if key not in OPTIONS or not eq:
            raise RftError(
                f"{ref}: bad option '{item}'{did_you_mean(key, OPTIONS)}; options are written key=value, "
                f"valid keys: {', '.join(OPTIONS)}"
            )
        if key in seen:
            raise RftError(f"{ref}: option '{key}' is given twice")
        seen.add(key)
        if key == "split":
            split = value
        elif key == "n":
            n = _int_option(ref, key, value, 1)
        else:
            seed = _int_option(ref, key, value, None)
    if n is not None and n < 1:
        raise RftError(f"{ref}: n must be at least 1, got {n}")
    name, slash, task = body.partition("/")
    if name not in BUILTINS:
        raise _unknown(name)
    if name in TASK_LISTERS and not task:
        raise RftError(
            f"{ref}: '{name}' is a family of datasets; name one as {PREFIX}{name}/<task>",
            hint=f"list them with: python -c \"from rft.data import list_builtins; print(list_builtins())\"",
        )
    if name not in TASK_LISTERS and slash:
        raise RftError(f"{ref}: '{name}' takes no '/<task>' part; write {PREFIX}{name}")
    return BuiltinRequest(name=name, task=task or None, split=normalize_split(split), n=n, seed=seed,
                          options=tuple(extra))


def _unknown(name: str) -> RftError:
    try:
        BUILTINS.get_or_raise(name)  # the message with did-you-mean and the valid names
    except RftError as e:
        forms = [f"{PREFIX}{k}/<task>" if k in TASK_LISTERS else f"{PREFIX}{k}" for k in sorted(BUILTINS)]
        e.hint = f"built-in datasets are written {', '.join(forms)}"
        return e
    raise AssertionError(name)


def load_builtin(ref: str, *, split: str = "train", n: int | None = None, seed: int | None = None) -> Dataset:
    """Generate a built-in dataset. The resolved spec (with split, n and seed filled in) becomes `source`."""
    req = parse_ref(ref, split=split, n=n, seed=seed)
    rows, n_used, seed_used = BUILTINS[req.name](req)
    name = req.name + (f"/{req.task}" if req.task else "")
    return Dataset(
        name=ref,
        rows=tuple(rows),
        sha256=fingerprint(rows),
        source=f"{PREFIX}{name}?split={req.split}&n={n_used}&seed={seed_used}"
        + "".join(f"&{k}={v}" for k, v in sorted(req.options)),
        line_numbers=tuple(range(1, len(rows) + 1)),
    )


# --- builtin:arithmetic ------------------------------------------------------------------------------------

ARITHMETIC_TEMPLATES = (
    "What is {a} {op} {b}? Answer with just the number.",
    "Calculate {a} {op} {b}. Answer with just the number.",
)
# The train/validation partition is fixed by this constant, never by the user's seed, so validation questions
# can't leak into training whatever seeds a run uses.
_ARITHMETIC_PARTITION_SEED = 20240917
_ARITHMETIC_DEFAULTS = {"train": (2000, 0), "validation": (None, 1)}  # split -> (n, seed)


def arithmetic_partition() -> tuple[list[tuple[int, str, int]], list[tuple[int, str, int]]]:
    """The 200 (a, op, b) triples split into 100 train and 100 validation triples.

    `a op b` and `b op a` always land on the same side, so validation never asks a commuted training question.
    """
    groups = []
    for op in ("+", "*"):
        for a in range(10):
            for b in range(a, 10):
                groups.append([(a, op, b)] if a == b else [(a, op, b), (b, op, a)])
    random.Random(_ARITHMETIC_PARTITION_SEED).shuffle(groups)
    train: list[tuple[int, str, int]] = []
    val: list[tuple[int, str, int]] = []
    for g in groups:
        (train if len(train) + len(g) <= 100 else val).extend(g)
    assert len(train) == 100 and len(val) == 100, "partition seed must fill both halves exactly"
    return train, val


def arithmetic_row(a: int, op: str, b: int, template: int) -> dict[str, Any]:
    result = a + b if op == "+" else a * b
    content = ARITHMETIC_TEMPLATES[template].format(a=a, op=op, b=b)
    return {"messages": [{"role": "user", "content": content}], "answer": str(result), "a": a, "b": b, "op": op}


def _describe_arithmetic(task: str | None) -> str:
    return ("single-digit + and * questions answered with just the number; 100 training and 100 validation "
            "(a, op, b) triples that never overlap")


@register_builtin("arithmetic", describe=_describe_arithmetic)
def arithmetic(req: BuiltinRequest) -> tuple[list[dict[str, Any]], int, int]:
    """Validation: all 200 distinct questions in a seeded order (first n of it; with replacement past 200).
    Train: n (default 2000) draws with replacement from the 200 training questions."""
    default_n, default_seed = _ARITHMETIC_DEFAULTS[req.split]
    seed = default_seed if req.seed is None else req.seed
    train, val = arithmetic_partition()
    triples = train if req.split == "train" else val
    pool = [arithmetic_row(a, op, b, t) for (a, op, b) in triples for t in range(len(ARITHMETIC_TEMPLATES))]
    rng = random.Random(seed)
    if req.split == "validation":
        rng.shuffle(pool)
        n = len(pool) if req.n is None else req.n
        rows = pool[:n] if n <= len(pool) else rng.choices(pool, k=n)
    else:
        n = default_n if req.n is None else req.n
        rows = rng.choices(pool, k=n)
    # Fresh dicts per row: a later stage mutating one row must not change its repeats.
    return [{**r, "messages": [dict(m) for m in r["messages"]]} for r in rows], n, seed
