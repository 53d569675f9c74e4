"""The job runner without sockets: offers checked, parameters mapped, jobs run, errors coded."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from daemon_helpers import decode, picture, png
from fast_helpers import one_thread

from gpu_node.daemon.params import ArbitraryJob, Declined, FastJob, GatysJob, NodeCaps, job_spec
from gpu_node.daemon.reporting import Reporter, preview_jpeg
from gpu_node.daemon.runner import JobFailed, JobRunner
from gpu_node.engine.gatys_params import Init, Optimizer
from gpu_node.engine.progress import EngineProgress
from gpu_node.fast.registry import StyleRegistry, build_registry
from protocol import (
    DeclineReason,
    FailureCode,
    Message,
    Offer,
    Preview,
    Progress,
    Result,
    Scalar,
    StyleImage,
)

CAPS = NodeCaps(max_epochs=100, max_pixels=100_000)
_ids = itertools.count()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def registry() -> StyleRegistry:
    return build_registry(None)


@pytest.fixture(scope="module")
def runner(registry: StyleRegistry) -> JobRunner:
    return JobRunner(CAPS, registry, torch.device("cpu"))


def offer(
    method: str = "gatys",
    params: dict[str, Scalar] | None = None,
    *,
    style_id: str | None = None,
    styles: int = 1,
    content: bytes | None = None,
) -> Offer:
    n = next(_ids)
    return Offer(
        f"job-{n}",
        f"lease-{n}",
        method,
        {"epochs": 3, "size": 48} if params is None else params,
        style_id,
        tuple(StyleImage(png("starry_night.jpg", 40), 1.0 + i) for i in range(styles)),
        png() if content is None else content,
    )


# ---- parameters --------------------------------------------------------------------------


def test_gatys_params_are_mapped_onto_the_engine(registry: StyleRegistry) -> None:
    params: dict[str, Scalar] = {
        "epochs": 40, "size": 64, "content_weight": 0.5, "style_weight": 2, "tv_weight": 0.1,
        "optimizer": "adam", "init": "noise", "learning_rate": 3.0, "seed": 7.0,
        "keep_colors": True, "strength": 0.5,
    }  # fmt: skip
    spec = job_spec(offer("gatys", params, styles=2), CAPS, registry)
    assert isinstance(spec, GatysJob)
    p = spec.params
    assert (p.epochs, p.max_epochs, p.size) == (40, 100, 64)
    assert (p.content_weight, p.style_weight, p.tv_weight) == (0.5, 2.0, 0.1)
    assert (p.optimizer, p.init, p.learning_rate, p.seed) == (Optimizer.ADAM, Init.NOISE, 3.0, 7)
    assert p.preserve_colors is True
    assert p.style_strength == 0.5  # the page's strength slider reaches Gatys too
    assert p.preview_every == 1  # about 50 previews a job at most
    assert spec.style_weights == (1.0, 2.0)


def test_gatys_defaults_respect_the_node_cap(registry: StyleRegistry) -> None:
    spec = job_spec(offer("gatys", {}), NodeCaps(50, 10**6), registry)
    assert isinstance(spec, GatysJob)
    assert spec.params.epochs == 50
    assert spec.params.preview_every == 1


def test_fast_blends_resolve_to_full_ids(registry: StyleRegistry) -> None:
    params: dict[str, Scalar] = {"style_mix": "starry-blue:3,builtin:red-fauve:1", "strength": 0.5}
    spec = job_spec(offer("fast", params, styles=0), CAPS, registry)
    assert isinstance(spec, FastJob)
    assert spec.mix.parts == (("builtin:starry-blue", 0.75), ("builtin:red-fauve", 0.25))
    assert (spec.strength, spec.size, spec.preserve_colors) == (0.5, None, False)
    single = job_spec(offer("fast", {}, style_id="builtin:sepia-oil", styles=0), CAPS, registry)
    assert isinstance(single, FastJob)
    assert single.mix.parts == (("builtin:sepia-oil", 1.0),)


def test_arbitrary_takes_its_one_style_image(registry: StyleRegistry) -> None:
    spec = job_spec(offer("arbitrary", {"keep_colors": True}), CAPS, registry)
    assert spec == ArbitraryJob(size=None, strength=1.0, preserve_colors=True)


_SEPIA = "builtin:sepia-oil"


@pytest.mark.parametrize(
    ("job", "reason", "message"),
    [
        (offer("gatys", {"epochs": 101}), DeclineReason.TOO_LARGE, "cap of 100"),
        (offer("gatys", {"optimizer": "sgd"}), DeclineReason.INVALID_PARAMS, "lbfgs, adam"),
        (offer("gatys", {"content_weight": "x"}), DeclineReason.INVALID_PARAMS, "a number"),
        (offer("gatys", {"style_weight": -1.0}), DeclineReason.INVALID_PARAMS, "zero or more"),
        (offer("gatys", {"epochs": 2.5}), DeclineReason.INVALID_PARAMS, "whole number"),
        (offer("gatys", {"colour": 1}), DeclineReason.INVALID_PARAMS, "unknown parameter"),
        (offer("gatys", {"size": 8}), DeclineReason.INVALID_PARAMS, "size must be"),
        (offer("gatys", {"keep_colors": "yes"}), DeclineReason.INVALID_PARAMS, "true or false"),
        (offer("gatys", {}, styles=0), DeclineReason.INVALID_INPUT, "at least one style image"),
        (
            offer("fast", {}, style_id="builtin:nope", styles=0),
            DeclineReason.UNKNOWN_STYLE,
            "no style 'builtin:nope'",
        ),
        (offer("fast", {}, styles=0), DeclineReason.INVALID_PARAMS, "needs a style"),
        (
            offer("fast", {"strength": 1.5}, style_id=_SEPIA, styles=0),
            DeclineReason.INVALID_PARAMS,
            "between 0 and 1",
        ),
        (
            offer("fast", {"style_mix": f"{_SEPIA},trained:x"}, styles=0),
            DeclineReason.UNKNOWN_STYLE,
            "trained:x",
        ),
        (offer("arbitrary", {}, styles=2), DeclineReason.INVALID_PARAMS, "exactly one style"),
        (offer("pix2pix", {}), DeclineReason.UNSUPPORTED_METHOD, "serves gatys, fast"),
    ],
)
def test_bad_offers_are_declined_with_a_reason(
    runner: JobRunner, job: Offer, reason: DeclineReason, message: str
) -> None:
    with pytest.raises(Declined, match=message) as caught:
        runner.screen(job)
    assert caught.value.reason is reason


def test_a_result_over_the_pixel_cap_is_declined_before_any_work(registry: StyleRegistry) -> None:
    small = JobRunner(NodeCaps(100, 48 * 48), registry, torch.device("cpu"))
    small.screen(offer("gatys", {"size": 48}))  # 48 x 32 fits
    with pytest.raises(Declined, match=r"64x43 = 2,752 pixels, above this node's cap") as caught:
        small.screen(offer("gatys", {"size": 64}))
    assert caught.value.reason is DeclineReason.TOO_LARGE


# ---- throttling --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_throttled_to_four_a_second_and_the_last_always_goes() -> None:
    clock = FakeClock()
    sent: list[Message] = []
    reporter = Reporter(offer(), sent.append, clock=clock)
    for epoch in range(1, 201):  # 200 epochs over 2 seconds
        reporter.progress(EngineProgress(epoch, 200, {"total": 1.0 / epoch}, epoch / 100))
        clock.now += 0.01
    epochs = [m.epoch for m in sent if isinstance(m, Progress)]
    assert epochs[0] == 1 and epochs[-1] == 200
    assert 8 <= len(epochs) <= 10  # 4 a second for 2 s, plus the last
    assert all(b - a >= 25 for a, b in itertools.pairwise(epochs[:-1]))


def test_previews_are_small_jpegs_about_once_a_second() -> None:
    clock = FakeClock()
    sent: list[Message] = []
    reporter = Reporter(offer(), sent.append, clock=clock)
    big = picture("tubingen.png", 600)
    for epoch in range(1, 25):  # 24 epochs over 3 seconds
        reporter.preview(big, epoch)
        clock.now += 0.125
    previews = [m for m in sent if isinstance(m, Preview)]
    assert [p.epoch for p in previews] == [1, 9, 17]
    image = decode(previews[0].jpeg)
    assert image.format == "JPEG" and max(image.size) == 256
    assert len(preview_jpeg(big)) < 30_000


# ---- running -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_gatys_job_runs_to_a_png_result_with_progress_and_a_preview(runner: JobRunner) -> None:
    job = offer("gatys", {"epochs": 3, "size": 48, "seed": 1})
    sent: list[Message] = []
    result = runner.run(job, runner.screen(job), threading.Event(), sent.append)
    assert isinstance(result, Result)
    image = decode(result.png)
    assert image.format == "PNG" and image.size == (result.width, result.height) == (48, 32)
    assert result.sha256 == hashlib.sha256(result.png).hexdigest()
    progress = [m for m in sent if isinstance(m, Progress)]
    assert progress[-1].epoch == progress[-1].max_epochs == 3
    assert set(progress[-1].losses) >= {"content", "style", "total"}
    assert any(isinstance(m, Preview) for m in sent)
    # the optimisation moved the picture away from the photo it started from
    before = np.asarray(picture(), dtype=np.float64)
    assert np.abs(np.asarray(image.convert("RGB"), dtype=np.float64) - before).mean() > 1.0


def test_a_fast_job_at_strength_zero_gives_back_the_photo(runner: JobRunner) -> None:
    job = offer("fast", {"strength": 0.0, "size": 48}, style_id="builtin:red-fauve", styles=0)
    sent: list[Message] = []
    result = runner.run(job, runner.screen(job), threading.Event(), sent.append)
    image = np.asarray(decode(result.png).convert("RGB"), dtype=np.int16)
    assert image.shape == (32, 48, 3)
    assert np.abs(image - np.asarray(picture(), dtype=np.int16)).max() <= 1
    styled_job = offer("fast", {"size": 48}, style_id="builtin:red-fauve", styles=0)
    styled = runner.run(styled_job, runner.screen(styled_job), threading.Event(), sent.append)
    diff = np.asarray(decode(styled.png).convert("RGB"), dtype=np.int16) - image
    assert np.abs(diff).mean() > 10
    assert [m.epoch for m in sent if isinstance(m, Progress)] == [1, 1]


def test_an_arbitrary_job_keeps_the_photos_size(runner: JobRunner) -> None:
    job = offer("arbitrary", {}, content=png("chelsea.png", 40))
    result = runner.run(job, runner.screen(job), threading.Event(), lambda m: None)
    assert (result.width, result.height) == (40, 26)


def test_a_cancelled_job_fails_as_cancelled(runner: JobRunner) -> None:
    job = offer("gatys", {"epochs": 3, "size": 48})
    cancel = threading.Event()
    cancel.set()
    sent: list[Message] = []
    with pytest.raises(JobFailed) as caught:
        runner.run(job, runner.screen(job), cancel, sent.append)
    assert caught.value.code is FailureCode.CANCELLED
    assert not [m for m in sent if isinstance(m, Progress)]
    failure = caught.value.failure(job)
    assert (failure.job_id, failure.lease_id, failure.code) == (
        job.job_id, job.lease_id, FailureCode.CANCELLED,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "style", "message"),
    [
        (b"not a picture", None, "the content image: not an image"),
        (png()[:200], None, "the content image: corrupt"),
        (None, b"\x89PNG\r\n\x1a\n garbage", "the style image 1: "),
    ],
)
def test_unreadable_images_fail_as_invalid_input(
    runner: JobRunner, content: bytes | None, style: bytes | None, message: str
) -> None:
    job = offer("gatys", content=content)
    if style is not None:
        job = Offer(job.job_id, job.lease_id, "gatys", job.params, None,
                    (StyleImage(style),), job.content)  # fmt: skip
    with pytest.raises(JobFailed, match=message) as caught:
        runner.run(job, runner.screen(job), threading.Event(), lambda m: None)
    assert caught.value.code is FailureCode.INVALID_INPUT


def test_the_warm_up_measures_the_one_pass_methods_too(registry: StyleRegistry) -> None:
    # Gatys is timed in tests/test_estimates.py; here the two one-pass networks, for real.
    only = JobRunner(CAPS, registry, torch.device("cpu"), methods=("fast", "arbitrary"))
    paces = {p.method: p for p in only.measure_pace()}
    assert set(paces) == {"fast", "arbitrary"}
    for pace in paces.values():
        assert pace.seconds >= 0 and pace.seconds_per_mp > 0
        # A one-pass job of a megapixel takes seconds on a CPU, not minutes.
        assert pace.seconds + pace.seconds_per_mp < 60
