"""rft: reinforcement fine-tuning for open models.

Accepts OpenAI's reinforcement fine-tuning job body and grader JSON, trains open models with GRPO-family
algorithms on the user's own hardware, evaluates against a baseline with confidence intervals, and keeps
every artifact traceable. See README.md for the two commands that set everything up.

The Python API (`rft.api`, documented there) is exported here lazily, so `import rft` loads nothing else:

    import rft
    job = rft.train("job.yaml", {"rft.train.max_steps": 20})
    rft.evaluate(job["fine_tuned_model"], "val.jsonl", "grader.json")
    rft.load("alias:production").chat("What is 7 * 8?")

`rft.train`, `rft.batch` and `rft.strategies` are also the names of subpackages (`rft.train.loop`,
`rft.batch.jobs`, `rft.strategies.runner`): once one of them is imported, Python binds the package name to the
subpackage. So that `rft.train(...)`, `rft.batch(...)` and `rft.strategies(...)` keep working either way, those
subpackages are made callable (calling one calls the `rft.api` function of that name); everything else about them
is unchanged.
"""


# Private names: rft's own submodules (rft.types, ...) are bound in this namespace when they are imported.
# Only `sys` (always loaded): `import rft` must stay as cheap as it was.
import sys as _sys

_ModuleType = type(_sys)


def _import(name: str):
    """`importlib.import_module(name)` without loading importlib."""
    __import__(name)
    return _sys.modules[name]

__version__ = "0.1.0"

# name -> module attribute it stands for; loaded on first access (PEP 562)
_API = ("train", "resume", "evaluate", "compare", "load", "grade", "batch", "jobs", "job", "checkpoints", "lineage",
        "export", "datasets", "load_dataset", "Model", "strategies", "pairs", "replay", "replay_eval", "explain",
        "review_queue", "review_submit", "review_agreement", "review_export_guard")
# subpackages whose name is also an API function
_CALLABLE_SUBPACKAGES = {"train": "train", "batch": "batch", "strategies": "strategies"}


def _api():
    # By name: the API sits near the top of the layers, and this package's namespace only forwards to it.
    return _import("rft.api")


class _CallableSubpackage(_ModuleType):
    """A subpackage that is also an API function (see the module docstring)."""

    def __call__(self, *args, **kwargs):
        return getattr(_api(), _CALLABLE_SUBPACKAGES[self.__name__.rsplit(".", 1)[-1]])(*args, **kwargs)


class _Package(_ModuleType):
    """This package's module type: makes `train`, `batch` and `strategies` callable when Python binds them as subpackages."""

    def __setattr__(self, name, value):
        if name in _CALLABLE_SUBPACKAGES and type(value) is _ModuleType and \
                value.__name__ == f"{__name__}.{name}":
            value.__class__ = _CallableSubpackage
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _CALLABLE_SUBPACKAGES or name == "api":
        return _import(f"{__name__}.{name}")  # binds it here (made callable) and returns it
    if name in _API:
        value = getattr(_api(), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


__all__ = list(_API)
