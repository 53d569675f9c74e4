"""Fixtures of the browser tests, loaded as a plugin (`pytest_plugins = ["web_fixtures"]`):
the browser, a relay with its fake node, test files, a screenshot dir, a fresh profile."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright
from relay_harness import FakeNode
from web_browser import launch, make_files, new_context, shots_dir
from web_relay import RelayThread, web_config


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module. Not per session: Playwright's sync API keeps
    an event loop running in this thread while it is open, which would break asyncio tests
    that run after it."""
    with sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    """A relay with one fake node that spends 40 ms on each epoch."""
    server = RelayThread(web_config(tmp_path_factory.mktemp("relay"))).start()
    server.add_node(epoch_seconds=0.04)
    yield server
    server.stop()


@pytest.fixture
def node(relay: RelayThread) -> Iterator[FakeNode]:
    """The relay's fake node, back at its normal speed after the test."""
    fake = relay.nodes[0][0]
    yield fake
    fake.epoch_seconds = 0.04


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("files"))


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shots_dir(tmp_path_factory.mktemp("shots"))


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile; any uncaught script error on any of its pages fails the test."""
    ctx = new_context(browser)
    errors: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    yield ctx
    ctx.close()
    assert errors == []
