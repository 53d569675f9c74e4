"""`Daemon`: dial the relay, serve a session, and when it ends dial again, forever.

Between attempts it waits with full-jitter backoff. It stops for good only when the relay
refuses this node for a reason a retry cannot cure (exit status 2), or when it is asked to
drain (SIGTERM, SIGINT) and has finished or handed back its jobs (exit status 0).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import signal
import ssl
import time
from importlib import metadata

from gpu_node.daemon.backoff import Backoff
from gpu_node.daemon.capabilities import build_capabilities
from gpu_node.daemon.config import ConfigError, NodeConfig
from gpu_node.daemon.devices import DeviceRunners, Runner
from gpu_node.daemon.params import NodeCaps
from gpu_node.daemon.runner import JobRunner
from gpu_node.daemon.session import FatalReject, Outcome, Session
from gpu_node.daemon.tls import client_context, explain
from gpu_node.device import configure_backend, node_paths, resolve_devices
from gpu_node.fast.allocator import keep_freed_memory
from gpu_node.fast.registry import build_registry
from gpu_node.methods import installed_methods
from protocol import Capabilities
from protocol.limits import MAX_ITEMS

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
EXIT_OK = 0
EXIT_REFUSED = 2


def software_version() -> str:
    """This node's package version, for Hello."""
    try:
        return f"stylerelay-node {metadata.version('stylerelay')}"
    except metadata.PackageNotFoundError:
        return "stylerelay-node (source)"


class Daemon:
    """The node's connection to its relay, kept up until it is told to stop."""

    def __init__(
        self,
        config: NodeConfig,
        capabilities: Capabilities,
        runner: Runner,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.capabilities = capabilities
        self.runner = runner
        self.backoff = Backoff(
            config.backoff_min, config.backoff_max, stable_after=config.stable_after, rng=rng
        )
        self.session: Session | None = None
        self.tls = client_context(config)
        self.connections = 0
        """How many times a connection was opened (for tests and logs)."""
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=capabilities.slots, thread_name_prefix="job"
        )
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._at = 0
        """Which of `config.relays` is dialled next."""

    async def serve(self) -> int:
        """Keep a session with the relay until drained (0) or refused for good (2)."""
        self._wake = asyncio.Event()
        # on a worker thread, while we dial: the first job then starts at once
        warm_up = asyncio.get_running_loop().run_in_executor(self._executor, self.runner.warm_up)
        try:
            untried = len(self.config.relays) - 1
            while not self._stopping:
                connected = self.connections
                outcome = await self._attempt()
                if outcome is Outcome.DRAINED or self._stopping:
                    break
                # Several addresses (relay replicas): the next one at once, and a pause
                # only once each has failed since the last connection.
                self._at = (self._at + 1) % len(self.config.relays)
                untried = len(self.config.relays) - 1 if self.connections > connected else untried
                if untried > 0:
                    untried -= 1
                    continue
                untried = len(self.config.relays) - 1
                delay = self.backoff.failure()
                log.info("backing off %.1f s before reconnecting", delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            log.info("stopped")
            return EXIT_OK
        except FatalReject as exc:
            log.error("%s; not retrying", exc)
            return EXIT_REFUSED
        finally:
            warm_up.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _attempt(self) -> Outcome:
        config = self.config
        host, port = config.relays[self._at]
        log.info("connecting to the relay at %s", config.label(host, port))
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=self.tls, server_hostname=host if self.tls else None
                ),
                CONNECT_TIMEOUT,
            )
        except ssl.SSLError as exc:
            log.error("%s", explain(exc, config))
            return Outcome.DISCONNECTED
        except (OSError, TimeoutError) as exc:
            where = config.label(host, port)
            log.warning("cannot reach the relay at %s: %s", where, exc or "timed out")
            return Outcome.DISCONNECTED
        self.connections += 1
        if self._stopping:  # asked to stop while we were dialling
            writer.close()
            return Outcome.DRAINED
        session = self.session = Session(
            config,
            self.capabilities,
            self.runner,
            self._executor,
            software_version=software_version(),
        )
        started = time.monotonic()
        try:
            outcome = await session.run(reader, writer)
        finally:
            self.session = None
        uptime = time.monotonic() - started
        self.backoff.connection_ended(uptime)
        log.info("disconnected from the relay after %.0f s (%s)", uptime, outcome.value)
        return outcome

    def drain(self) -> None:
        """Finish or hand back running jobs, say Bye and stop (a second call: hand back now)."""
        if not self._stopping:
            log.info("asked to stop: draining")
        self._stopping = True
        if self.session is not None:
            self.session.drain()
        if self._wake is not None:
            self._wake.set()

    def install_signal_handlers(self) -> None:
        """Drain on SIGTERM and SIGINT (where the platform lets asyncio catch them)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.drain)


def create_daemon(config: NodeConfig, *, rng: random.Random | None = None) -> Daemon:
    """A daemon for `config`: its device set up, styles found, engines ready to load."""
    # Large tensors reuse freed memory instead of page-faulting afresh each job (about 30%
    # of CPU time on fast styles); the peak is bounded by the node's max_pixels.
    keep_freed_memory()
    devices = resolve_devices(config.device)
    if len(devices) * config.slots > MAX_ITEMS:
        raise ConfigError(
            f"{len(devices)} device(s) x {config.slots} slot(s) is over the protocol's "
            f"{MAX_ITEMS} slots a node; lower --slots"
        )
    paths = {d: node_paths(d, config.precision, config.compile) for d in set(devices)}
    configure_backend(devices[0], paths=paths[devices[0]])
    registry = build_registry(config.models_dir)
    caps, methods = NodeCaps(config.max_epochs, config.max_pixels), installed_methods()
    runner = DeviceRunners(
        [JobRunner(caps, registry, d, methods, paths=paths[d]) for d in devices], config.slots
    )
    capabilities = build_capabilities(
        config, registry, devices[0], runner.methods, runner.measure_pace(), devices=devices
    )
    log.info(
        "node %r on %s (%s): %s; %d style(s); max %d epochs, %d pixels, %d slot(s)",
        config.name, ",".join(map(str, devices)), capabilities.device_name,
        ", ".join(runner.methods) or "no methods", len(capabilities.styles),
        config.max_epochs, config.max_pixels, capabilities.slots,
    )  # fmt: skip
    return Daemon(config, capabilities, runner, rng=rng)


async def serve(daemon: Daemon) -> int:
    """Run `daemon` with SIGTERM/SIGINT draining it; return the exit status."""
    daemon.install_signal_handlers()
    return await daemon.serve()
