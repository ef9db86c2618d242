"""The server's model pool (rft.serve.pool): bounded, LRU eviction of idle workers only, the default model
pinned, one load per model however many requests wait for it, every name of one directory on one worker.
A fake worker factory counts loads and closes; `rft.models.resolve` maps names to directories by a table."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref


import pytest

from rft import models
from rft.errors import RftError
from rft.models import ResolvedModel
from rft.openai_chat import parse_chat_body
from rft.serve.pool import ModelNotFound, ModelPool, ModelUnavailable, PoolFull, WorkerEngine


def run_in_fresh_thread(coro_fn) -> None:
    """asyncio.run(coro_fn()) on a thread of its own: the test process may already run an event loop on the main
    thread (Playwright's sync API does, for the dashboard tests), where asyncio.run refuses to start."""
    err: list[BaseException] = []

    def target():
        try:
            asyncio.run(coro_fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            err.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the event loop thread did not finish"
    if err:
        raise err[0]


class FakeWorker:
    def __init__(self, resolved, closes: list):
        self.resolved = resolved
        self.closed = False
        self._closes = closes

    def close(self):
        self.closed = True
        self._closes.append(self.resolved.path.name)


@pytest.fixture
def names(monkeypatch, tmp_path):
    """name -> directory; a name missing from the table does not resolve. Counts resolve calls that hash."""
    table = {n: tmp_path / n for n in ("m1", "m2", "m3", "m4")}
    table["alias:a"] = tmp_path / "m1"  # a second name of m1
    hashed: list[str] = []

    def fake_resolve(ref, *, verify=True, prepare=True):
        if ref not in table:
            raise RftError(f"model '{ref}' not found")
        if verify:
            hashed.append(ref)
        return ResolvedModel(ref, table[ref], "directory")

    monkeypatch.setattr(models, "resolve", fake_resolve)
    table_hashed = (table, hashed)
    return table_hashed


class Factory:
    """make_worker for the pool: records every worker; `gate` (an Event) holds loads until it is set."""

    def __init__(self):
        self.workers: list[FakeWorker] = []
        self.close_order: list[str] = []
        self.gate: threading.Event | None = None
        self.fail: set[str] = set()
        self.entered = threading.Event()

    def __call__(self, resolved, name):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        if resolved.path.name in self.fail:
            raise RftError("scripted load failure")
        self.workers.append(FakeWorker(resolved, self.close_order))
        return self.workers[-1]

    def loaded(self) -> list[str]:
        return [w.resolved.path.name for w in self.workers]

    def closed(self) -> list[str]:
        """Names of the closed workers, in the order they were closed."""
        return list(self.close_order)


@pytest.fixture
def factory():
    return Factory()


def use(pool: ModelPool, name: str) -> None:
    pool.lease(name).release()


def test_lru_eviction_keeps_at_most_max_models(names, factory):
    pool = ModelPool(None, max_models=2, make_worker=factory)
    try:
        use(pool, "m1")
        use(pool, "m2")
        use(pool, "m1")  # m1 is now the most recently used
        use(pool, "m3")  # evicts m2, the least recently used
        assert factory.loaded() == ["m1", "m2", "m3"] and factory.closed() == ["m2"]
        assert pool.loads == 3 and pool.closes == 1
        assert sorted(m["key"].rsplit("/", 1)[-1] for m in pool.loaded()) == ["m1", "m3"]
        use(pool, "m2")  # back again: a fresh load, evicting m1 now
        assert factory.loaded() == ["m1", "m2", "m3", "m2"] and factory.closed() == ["m2", "m1"]
        assert len(pool.loaded()) == 2
    finally:
        pool.close()
    assert pool.closes == 4 and all(w.closed for w in factory.workers)  # close() closes the rest


def test_every_name_of_one_directory_shares_one_worker(names, factory):
    _, hashed = names
    pool = ModelPool(None, max_models=2, make_worker=factory)
    try:
        with pool.lease("m1") as a, pool.lease("alias:a") as b:
            assert a.worker is b.worker and (a.name, b.name) == ("m1", "alias:a")
        assert pool.loads == 1
        use(pool, "m1")
        assert hashed == ["m1", "alias:a"]  # each name's files are hashed once, not on every request
    finally:
        pool.close()


def test_a_worker_in_use_is_not_evicted(names, factory):
    pool = ModelPool(None, max_models=2, make_worker=factory)
    try:
        busy = pool.lease("m1")  # a request in flight on m1
        use(pool, "m2")
        use(pool, "m3")  # m1 is older, but in use: m2 goes
        assert factory.closed() == ["m2"] and not factory.workers[0].closed
        with pool.lease("m3"):
            with pytest.raises(PoolFull, match="all 2 model slots"):
                pool.lease("m4")  # both slots in use
        busy.release()
        use(pool, "m4")  # now m1 is idle and the least recently used
        assert factory.closed() == ["m2", "m1"]
    finally:
        pool.close()


def test_the_default_model_is_preloaded_and_never_evicted(names, factory):
    pool = ModelPool("m1", max_models=2, make_worker=factory)
    try:
        assert pool.preload() is factory.workers[0]
        for n in ("m2", "m3", "m4", "m2"):
            use(pool, n)
        assert "m1" not in factory.closed() and factory.loaded().count("m1") == 1
        with pool.lease() as lease:  # no name: the default
            assert lease.name == "m1" and lease.worker is factory.workers[0]
        with pytest.raises(PoolFull):
            with pool.lease("m3"):  # m1 pinned + m3 in use: no room
                pool.lease("m2")
    finally:
        pool.close()


def test_max_models_one_with_a_default_refuses_other_models(names, factory):
    pool = ModelPool("m1", max_models=1, make_worker=factory)
    try:
        pool.preload()
        with pytest.raises(PoolFull, match="--max-models"):
            pool.lease("m2")
    finally:
        pool.close()


def test_concurrent_requests_for_one_model_share_one_load(names, factory):
    factory.gate = threading.Event()
    pool = ModelPool(None, max_models=2, make_worker=factory)
    got: list = []
    try:
        threads = [threading.Thread(target=lambda: got.append(pool.lease("m1"))) for _ in range(6)]
        for t in threads:
            t.start()
        assert factory.entered.wait(30)  # the load is under way; the others wait for it
        factory.gate.set()
        for t in threads:
            t.join(30)
        assert len(got) == 6 and len({id(lease.worker) for lease in got}) == 1 and pool.loads == 1
        assert pool.loaded()[0]["leases"] == 6
        for lease in got:
            lease.release()
            lease.release()  # idempotent
        assert pool.loaded()[0]["leases"] == 0
    finally:
        pool.close()


def test_concurrent_async_requests_share_one_load_off_the_event_loop(names, factory):
    factory.gate = threading.Event()
    pool = ModelPool(None, max_models=2, make_worker=factory)

    async def main():
        tasks = [asyncio.ensure_future(pool.lease_async("m2")) for _ in range(5)]
        while not factory.entered.is_set():  # the loop keeps running while the load waits on its gate
            await asyncio.sleep(0.01)
        factory.gate.set()
        leases = await asyncio.gather(*tasks)
        assert len({id(lease.worker) for lease in leases}) == 1
        for lease in leases:
            lease.release()

    try:
        run_in_fresh_thread(main)
        assert pool.loads == 1
    finally:
        pool.close()


def test_a_cancelled_waiter_releases_and_does_not_cancel_the_load(names, factory):
    factory.gate = threading.Event()
    pool = ModelPool(None, max_models=2, make_worker=factory)

    async def main():
        first = asyncio.ensure_future(pool.lease_async("m1"))
        second = asyncio.ensure_future(pool.lease_async("m1"))
        while not factory.entered.is_set():
            await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        factory.gate.set()
        lease = await second  # the shared load went on
        assert pool.loaded()[0]["leases"] == 1  # only the live request holds it
        lease.release()

    try:
        run_in_fresh_thread(main)
    finally:
        pool.close()


def test_unknown_models_and_failed_loads(names, factory):
    factory.fail.add("m2")
    pool = ModelPool("m1", max_models=2, make_worker=factory)
    try:
        pool.preload()
        with pytest.raises(ModelNotFound, match="The model 'gpt-4o' does not exist"):
            pool.lease("gpt-4o")
        with pytest.raises(ModelUnavailable, match="failed to load: scripted load failure"):
            pool.lease("m2")
        assert len(pool.loaded()) == 1  # the failed load left no slot behind
        factory.fail.clear()
        use(pool, "m2")  # and it can be tried again
        table, _ = names
        del table["m1"]  # the default reference stops resolving: 503, not 404
        with pytest.raises(ModelUnavailable, match="does not resolve any more"):
            pool.lease()
    finally:
        pool.close()


def test_no_default_and_no_name(names, factory):
    pool = ModelPool(None, make_worker=factory)
    try:
        assert pool.preload() is None and pool.loads == 0
        with pytest.raises(ModelNotFound, match="without a default model"):
            pool.lease()
    finally:
        pool.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_max_models_must_be_a_positive_integer(bad):
    with pytest.raises(RftError, match="max_models"):
        ModelPool(None, max_models=bad)


def test_closing_an_evicted_worker_frees_its_engine(names, scripted):
    refs: list = []

    def loader(resolved):
        eng = scripted(label=resolved.path.name)
        refs.append(weakref.ref(eng))
        return eng

    pool = ModelPool(None, max_models=1, loader=loader)  # real ModelWorkers
    try:
        with pool.lease("m1") as lease:
            r = lease.worker.submit_chat(parse_chat_body({"model": "m1", "messages": [{"role": "user", "content": "x"}]}))
            assert r.result(30)["choices"][0]["message"]["content"] == "m1:x" and r.result()["model"] == "m1"
            w1 = lease.worker
        use(pool, "m2")  # evicts m1
        gc.collect()
        assert w1.engine is None and refs[0]() is None  # nothing holds the engine any more
        assert refs[1]() is not None
    finally:
        pool.close()


def test_worker_engine_runs_generations_on_the_worker_thread(names, scripted):
    seen: list[str] = []

    class Recording(scripted):
        def generate(self, prompts, params):
            seen.append(threading.current_thread().name)
            return super().generate(prompts, params)

    pool = ModelPool(None, loader=lambda r: Recording())
    try:
        with pool.lease("m1") as lease:
            eng = WorkerEngine(lease.worker)
            call = parse_chat_body({"messages": [{"role": "user", "content": "y"}]})
            [[c]] = eng.generate([call.messages], call.params)
            assert c.text == "fake:y" and seen == ["rft-serve-worker"]
            assert eng.label == "fake"  # other attributes are the engine's
            assert getattr(eng, "tokenizer", None) is None and not hasattr(eng, "stream")
    finally:
        pool.close()
