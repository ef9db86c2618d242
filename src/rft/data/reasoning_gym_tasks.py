"""`builtin:reasoning_gym/<task>`: any reasoning-gym task as an rft dataset, and its scorer for graders.

What: rows `{"messages": [user question], "answer": str, "rg_task": task, "rg_entry": entry}` where `rg_entry`
is the reasoning-gym entry made JSON-safe (tuples become lists, other odd values strings), so a dataset can be
written to JSONL and read back. `reasoning_gym_score(task, answer, entry)` calls the task's own `score_answer`.
Task config: further query options set fields of the task's config dataclass, e.g.
`builtin:reasoning_gym/chain_sum?n=400&min_terms=2&max_terms=2&min_digits=1&max_digits=1`. Names are checked
against the dataclass's fields (an unknown one is an RftError listing the valid ones); values are coerced from the
field's type (int, float, bool, str, Literal, enums, Optional[...], and comma-separated lists/tuples such as
`operators=+,-`; values are %-decoded); the task's own `validate()` then runs, and what it rejects is an RftError
quoting its message. The dataset's fingerprint changes with the config because the rows do, and the options are
part of `Dataset.source`.
Simplified: fields whose type is neither a scalar nor a list/tuple of scalars (arc's board formatting, composite's
sub-datasets) cannot be set from a reference; `size` and `seed` are the reference's `n` and `seed`.
How to run: `python -c "from rft.data import load_dataset as l; print(l('builtin:reasoning_gym/leg_counting?n=2').rows)"`.

Three things about reasoning-gym that shape this module:
- Item i of a dataset with seed s is generated from Random(s + i), so seed s+1 repeats seed s shifted by one.
  The split therefore adds a large offset to the seed (`SPLIT_SEED_OFFSET`): train and validation draw from
  disjoint seed ranges whatever seeds the user picks (tasks with few distinct questions can still repeat one).
- Some tasks (boxnet, graph_color, propositional_logic, rubiks_cube, rush_hour) have no reference answer
  (`answer` is None; the scorer checks a proposed solution). Their rows get `answer: ""`.
- Some scorers compare against tuples in `metadata` (arc_agi, rearc grids), which JSON turns into lists;
  `_RESTORE` turns them back before scoring.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import enum
import functools
import math
import typing
from typing import Any, Callable
from urllib.parse import unquote

from rft.data.builtin import BuiltinRequest, register_builtin
from rft.errors import RftError, did_you_mean

DEFAULTS = {"train": (1000, 0), "validation": (200, 1)}  # split -> (n, seed)
SPLIT_SEED_OFFSET = {"train": 0, "validation": 1_000_000_000}
# composite needs a list of sub-datasets in its config, which a builtin name can't carry.
_UNSUPPORTED = {"composite"}


def reasoning_gym_task_names() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(set(DATASETS) - _UNSUPPORTED)


def _check_task(task: str) -> None:
    names = reasoning_gym_task_names()
    if task in names:
        return
    if task in _UNSUPPORTED:
        raise RftError(f"reasoning-gym task '{task}' is not supported: it needs a list of sub-datasets in its config")
    import difflib

    close = difflib.get_close_matches(task, names, n=5, cutoff=0.5)
    if not close:  # substring matches help for e.g. "arithmetic" -> basic_arithmetic, chain_sum ...
        close = [t for t in names if task.lower() in t][:5]
    suggest = f"; close matches: {', '.join(close)}" if close else ""
    raise RftError(
        f"unknown reasoning-gym task '{task}'{suggest}",
        hint=f"{len(names)} tasks exist; list them with: "
        "python -c \"from rft.data import list_builtins; print(list_builtins())\"",
    )


def json_safe(x: Any) -> Any:
    """A JSON round-trippable copy: tuples/sets -> lists, non-string keys -> strings, NaN/inf and unknown
    objects (Fraction, numpy scalars) -> numbers where exact, else strings."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted((json_safe(v) for v in x), key=repr)
    if x is None or isinstance(x, (str, bool, int)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    for method in ("tolist", "item"):  # numpy arrays and scalars
        fn = getattr(x, method, None)
        if callable(fn):
            try:
                return json_safe(fn())
            except (TypeError, ValueError):
                pass
    return str(x)


def _grid(g: Any) -> Any:
    return tuple(tuple(row) for row in g) if isinstance(g, list) else g


def _restore_arc(entry: dict[str, Any]) -> dict[str, Any]:
    meta = dict(entry.get("metadata") or {})
    for k in ("input", "output"):
        if k in meta:
            meta[k] = _grid(meta[k])
    return {**entry, "metadata": meta}


# task -> function undoing what JSON did to the entry, where the task's scorer cares.
_RESTORE: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"arc_agi": _restore_arc, "rearc": _restore_arc}


@functools.lru_cache(maxsize=None)
def _scorer(task: str) -> Callable[[str | None, dict[str, Any]], float]:
    from reasoning_gym.factory import get_score_answer_fn

    return get_score_answer_fn(task)


def reasoning_gym_score(task: str, answer: str, entry: dict[str, Any]) -> float:
    """Score `answer` with reasoning-gym's own scorer for `task` (1.0 = correct; partial credit is possible).

    `entry` is the row's `rg_entry` (JSON-safe is fine). Exceptions from the scorer propagate: some scorers
    raise on malformed answers (prime_factorization on "31x", boxnet on some inputs), and whether that counts
    as unscored or as a wrong answer is the grader's decision.
    """
    _check_task(task)
    restore = _RESTORE.get(task)
    return float(_scorer(task)(answer, restore(entry) if restore else entry))


# config fields a reference sets through its own n and seed.
_RESERVED_FIELDS = {"size": "n", "seed": "seed"}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def task_config_fields(task: str) -> dict[str, Any]:
    """The settable fields of `task`'s config dataclass: name -> resolved type (size and seed left out)."""
    from reasoning_gym.factory import DATASETS

    _check_task(task)
    config_cls = DATASETS[task][1]
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(config_cls) if f.name not in _RESERVED_FIELDS}


def _coerce_scalar(value: str, tp: Any) -> Any:
    """`value` as type `tp`; ValueError (with what was expected) when it isn't one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]: "none"/"null" is None, else X
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0])
        raise ValueError(f"a value of type {tp}")
    if origin is typing.Literal:
        for a in args:
            if str(a) == value:
                return a
        raise ValueError(f"one of {', '.join(map(str, args))}")
    if tp is bool:
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError("true or false")
    if tp is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError("an integer") from None
    if tp is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError("a number") from None
    if tp is str or tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for m in tp:
            if value in (m.name, str(m.value)) or value.upper() == m.name:
                return m
        raise ValueError(f"one of {', '.join(m.name.lower() for m in tp)}")
    if tp in (datetime.date, datetime.time):
        try:
            return tp.fromisoformat(value)
        except ValueError:
            raise ValueError(f"an ISO {tp.__name__}") from None
    raise TypeError(f"{tp}")


def _coerce(value: str, tp: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    seq = tp in (list, tuple) or origin in (list, tuple, collections.abc.Sequence)
    if seq:
        elem = args[0] if args and args[0] is not Ellipsis else str
        if typing.get_origin(elem) is not None and typing.get_origin(elem) not in (typing.Union, typing.Literal):
            raise TypeError(f"{tp}")  # list[tuple[...]] and the like
        items = [_coerce_scalar(v, elem) for v in value.split(",")] if value else []
        return tuple(items) if (tp is tuple or origin is tuple) else items
    return _coerce_scalar(value, tp)


def task_config(task: str, options: tuple[tuple[str, str], ...] | list[tuple[str, str]], *,
                ref: str | None = None) -> dict[str, Any]:
    """Typed config overrides for `task` from a reference's extra `key=value` options (see the module
    docstring); RftError naming the option on an unknown name or a value of the wrong type."""
    where = ref or f"builtin:reasoning_gym/{task}"
    fields = task_config_fields(task)
    out: dict[str, Any] = {}
    for key, raw in options:
        if key in _RESERVED_FIELDS:
            raise RftError(f"{where}: set the task's '{key}' with the reference's '{_RESERVED_FIELDS[key]}' option")
        if key not in fields:
            raise RftError(f"{where}: '{key}' is not a setting of reasoning-gym's {task}{did_you_mean(key, list(fields))}",
                           hint=f"valid: n, seed, split, {', '.join(fields)}")
        value = unquote(raw)
        try:
            out[key] = _coerce(value, fields[key])
        except ValueError as e:
            raise RftError(f"{where}: option '{key}' must be {e}, got '{value}'") from None
        except TypeError:
            raise RftError(f"{where}: option '{key}' (type {fields[key]}) cannot be set from a dataset reference")
    return out


def reasoning_gym_rows(task: str, n: int, seed: int, config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """n rows of `task`, generated by reasoning-gym with this exact seed (no split offset) and these config
    overrides (typed values, as `task_config` makes them)."""
    import reasoning_gym

    _check_task(task)
    config = dict(config or {})
    try:
        ds = reasoning_gym.create_dataset(task, size=n, seed=seed, **config)
    except Exception as e:  # config validation raises AssertionError/ValueError/TypeError depending on the task
        said = str(e) or type(e).__name__
        settings = "".join(f", {k}={v!r}" for k, v in config.items())
        raise RftError(f"reasoning-gym could not create task '{task}' (n={n}, seed={seed}{settings}): "
                       f"'{said}'") from e
    rows = []
    for i in range(n):
        try:
            entry = ds[i]
        except Exception as e:
            raise RftError(f"reasoning-gym task '{task}' failed on item {i} (seed={seed}): {e!r}") from e
        safe = json_safe(entry)
        rows.append(
            {
                "messages": [{"role": "user", "content": str(entry["question"])}],
                "answer": "" if entry.get("answer") is None else str(entry["answer"]),
                "rg_task": task,
                "rg_entry": safe,
            }
        )
    return rows


def describe_task(task: str | None) -> str:
    """One line for `rft data list`: the task class's docstring (else its config's), and its reasoning-gym
    category (the package the task lives in, e.g. arithmetic, games, logic)."""
    from reasoning_gym.factory import DATASETS

    if task is None or task not in DATASETS:
        return "any reasoning-gym task, generated with its default difficulty"
    dataset_cls, config_cls = DATASETS[task]
    lines = [ln.strip() for doc in (dataset_cls.__doc__, config_cls.__doc__) for ln in (doc or "").splitlines()]
    first = next((ln for ln in lines if ln), "")
    parts = dataset_cls.__module__.split(".")
    category = parts[1] if len(parts) > 2 else "reasoning-gym"
    text = first.rstrip(".") if first else f"the reasoning-gym task {task}"
    if len(text) > 100:  # a few docstrings run on for a paragraph: one line is the promise
        text = text[:100].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return f"{text} (reasoning-gym {category})"


@register_builtin("reasoning_gym", tasks=reasoning_gym_task_names, describe=describe_task, options=True)
def reasoning_gym_builtin(req: BuiltinRequest) -> tuple[list[dict[str, Any]], int, int]:
    """Default n is 1000 (train) / 200 (validation); the seed reasoning-gym gets is seed + the split's offset;
    further query options are the task's config fields."""
    default_n, default_seed = DEFAULTS[req.split]
    n = default_n if req.n is None else req.n
    seed = default_seed if req.seed is None else req.seed
    assert req.task is not None  # parse_ref guarantees it for families
    config = task_config(req.task, req.options)
    return reasoning_gym_rows(req.task, n, seed + SPLIT_SEED_OFFSET[req.split], config), n, seed
