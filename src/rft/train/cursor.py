"""The data cursor: which training rows each step takes. A seeded shuffle per epoch, so a run's order is a
function of (seed, epoch) alone and a resume continues it exactly from (epoch, position).

Run: `python -c "from rft.train.cursor import DataCursor; c = DataCursor(5, 0); print(c.take(7), c.state())"`
"""

from __future__ import annotations

import random


class DataCursor:
    """Seeded epoch-wise shuffle over the training rows; `state()` is what a resume needs, `restore()` uses it."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch, self.pos = 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        idx = list(range(self.n))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(idx)
        return idx

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= self.n:
                self.epoch += 1
                self.pos = 0
                self._order = self._perm()
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "n": self.n}

    def restore(self, saved: dict) -> bool:
        """Continue from a saved `state()`. Returns False, changing nothing, when it was saved over a different
        number of rows (its position does not apply to this data)."""
        if saved["n"] != self.n:
            return False
        self.epoch, self.pos = saved["epoch"], saved["pos"]
        self._order = self._perm()
        return True
