"""Fast and arbitrary jobs gathered into batches: the batcher alone, and the engine's
batched passes against one picture at a time."""

import threading
from collections.abc import Sequence

import pytest
import torch
from fast_helpers import DATA, one_thread, photo

from gpu_node.fast.batching import Batcher
from gpu_node.fast.engine import FastEngine, FastItem
from gpu_node.fast.registry import build_registry
from gpu_node.fast.spec import parse_style_mix
from gpu_node.images import open_image


def _submit_together(batcher: Batcher[int, int], jobs: Sequence[tuple[str, int]]) -> list[int]:
    """Submit every (key, item) from its own thread at once; the results in job order."""
    results: list[int] = [0] * len(jobs)
    start = threading.Barrier(len(jobs))

    def work(k: int, key: str, item: int) -> None:
        start.wait()
        results[k] = batcher.submit(key, item)

    threads = [threading.Thread(target=work, args=(k, *job)) for k, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_jobs_of_one_key_share_a_batch_and_each_gets_its_own_result() -> None:
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        return [10 * i for i in items]

    # a long wait: the batch closes because it is full, not because time ran out
    batcher: Batcher[int, int] = Batcher(run, wait=30.0, max_batch=4)
    assert _submit_together(batcher, [("a", i) for i in range(4)]) == [0, 10, 20, 30]
    assert batcher.sizes == [4] and sorted(batches[0]) == [0, 1, 2, 3]


def test_keys_never_mix_and_a_lone_job_waits_only_the_bounded_time() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: [-i for i in items], wait=0.01)
    assert batcher.submit("alone", 5) == -5
    jobs = [("a", 1), ("b", 2), ("a", 3), ("b", 4)]
    assert _submit_together(batcher, jobs) == [-1, -2, -3, -4]
    assert sum(batcher.sizes) == 5 and max(batcher.sizes) <= 2


def test_a_failed_batch_fails_each_of_its_jobs() -> None:
    def run(items: list[int]) -> list[int]:
        raise RuntimeError("out of memory")

    batcher: Batcher[int, int] = Batcher(run, wait=30.0, max_batch=2)
    errors: list[str] = []

    def work(item: int) -> None:
        try:
            batcher.submit("k", item)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == ["out of memory", "out of memory"]


@pytest.fixture(scope="module")
def engine() -> FastEngine:
    return FastEngine(build_registry(None), torch.device("cpu"))


def test_batched_built_in_styles_equal_one_at_a_time(engine: FastEngine) -> None:
    a, b = photo("chelsea.png"), photo("tubingen.png")
    b = torch.nn.functional.interpolate(b, size=a.shape[-2:], mode="bilinear")
    styles = [entry.id for entry in engine.registry]
    items = [
        FastItem(a, parse_style_mix(styles[0])),
        FastItem(b, parse_style_mix(styles[5]), 0.6, True),
    ]
    assert engine.batch_key(items[0]) == engine.batch_key(items[1])
    with one_thread():
        batched = engine.stylize_batch(items)
        alone = [engine.stylize_batch([item])[0] for item in items]
    for x, y in zip(batched, alone, strict=True):
        assert x.shape == y.shape == a.shape
        assert float((x - y).abs().max()) < 1e-4


def test_batched_arbitrary_styles_equal_one_at_a_time(engine: FastEngine) -> None:
    a, b = photo("chelsea.png"), photo("tubingen.png")
    b = torch.nn.functional.interpolate(b, size=a.shape[-2:], mode="bilinear")
    style = open_image(DATA / "astronaut.png")
    with one_thread():
        items = [engine.arbitrary_item(a, style), engine.arbitrary_item(b, style, 0.5, True)]
        batched = engine.stylize_arbitrary_batch(items)
        alone = [engine.stylize_arbitrary_batch([item])[0] for item in items]
    for x, y in zip(batched, alone, strict=True):
        assert float((x - y).abs().max()) < 1e-4
