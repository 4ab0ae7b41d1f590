"""Start and stop the local Service Bus emulator: engine plus AMQP front end on a reactor thread."""

from __future__ import annotations

import atexit
import logging
import socket
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from proton.reactor import Container

from workbook.clock import Clock
from workbook.config import DEFAULT_KEY_NAME, ServiceBusConnectionString, emulator_key
from workbook.faults import FaultInjector
from workbook.servicebus.amqp import ServiceBusFrontEnd
from workbook.servicebus.engine import ServiceBusEngine
from workbook.servicebus.entities import EmulatorConfig, load_config
from workbook.servicebus.errors import ServiceBusEmulatorError
from workbook.servicebus.management import TokenValidator

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 10.0


class EmulatorStartError(ServiceBusEmulatorError):
    """The emulator could not bind its port or its reactor did not start in time."""


class LocalServiceBusEmulator:
    """A Service Bus emulator on 127.0.0.1 that the official SDK reaches with ``UseDevelopmentEmulator=true``.

    Use it as a context manager, or call ``start()`` and ``stop()``. ``port=0`` picks a free port.
    ``key`` defaults to ``emulator_key()``: WORKBOOK_EMULATOR_KEY when set, else the published key.
    """

    def __init__(
        self,
        config: EmulatorConfig | Path | str | dict,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        store: Path | str | None = None,
        clock: Clock | None = None,
        key_name: str = DEFAULT_KEY_NAME,
        key: str | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.config = config if isinstance(config, EmulatorConfig) else load_config(config)
        self.host = host
        self.port = port
        self.key_name = key_name
        self._key = emulator_key() if key is None else key
        self._tempdir: tempfile.TemporaryDirectory | None = None
        self.store_path = Path(store) if store else self._temporary_store()
        self.engine = ServiceBusEngine(self.store_path, self.config, clock)
        self.faults = faults or FaultInjector()
        self._front_end = ServiceBusFrontEnd(self.engine, TokenValidator(key_name, self._key), self.faults)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"LocalServiceBusEmulator(endpoint=sb://{self.host}:{self.port}, store={self.store_path})"

    def _temporary_store(self) -> Path:
        self._tempdir = tempfile.TemporaryDirectory(prefix="workbook-servicebus-")
        return Path(self._tempdir.name) / "servicebus.sqlite"

    @property
    def connection(self) -> ServiceBusConnectionString:
        """The parsed connection string; its repr and str mask the key."""
        return ServiceBusConnectionString.for_emulator(self.host, self.port, self.key_name, self._key)

    @property
    def connection_string(self) -> str:
        """The connection string for the SDK. It carries the key: hand it to the SDK, never print it."""
        return self.connection.to_sdk_string()

    @property
    def running(self) -> bool:
        """Tell whether the reactor thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LocalServiceBusEmulator:
        """Bind the port and start the reactor thread; return once it accepts connections."""
        if self.running:
            return self
        if self.port == 0:
            self.port = _free_port(self.host)

        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="servicebus-emulator", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT_SECONDS) or self._error is not None:
            raise EmulatorStartError(
                f"the emulator did not start on {self.host}:{self.port}: {self._error or 'timed out'}. "
                "Choose another port or stop the process that holds it."
            )
        # A daemon reactor thread still inside proton while the interpreter finalizes can crash it
        # ("ffi.from_handle() ... points to garbage"), as when a notebook's kernel shuts down.
        atexit.register(self.stop)
        logger.info(
            "Service Bus emulator listening on %s:%d (store %s)", self.host, self.port, self.store_path
        )
        return self

    def _run(self, ready: threading.Event) -> None:
        _quiet_proton_logger()
        container = Container(self._front_end)
        self._front_end.container = container
        try:
            acceptor = container.listen(f"{self.host}:{self.port}")
        except Exception as error:  # proton raises socket errors of several kinds; all end the start
            self._error = error
            ready.set()
            return
        _widen_backlog(acceptor)
        self._front_end.acceptor = acceptor
        ready.set()
        try:
            container.run()
        except Exception:  # reported once; the thread ends and `running` turns False
            logger.exception("Service Bus emulator reactor stopped with an error")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reactor thread and close the store."""
        atexit.unregister(self.stop)
        if self._thread is not None:
            self._front_end.request_stop()
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("Service Bus emulator thread did not stop within %.1f s", timeout)
            self._thread = None
        self.engine.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
        logger.info("Service Bus emulator on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> LocalServiceBusEmulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _quiet_proton_logger() -> None:
    # proton logs every client that hangs up mid-write as an ERROR ("Couldn't send"), which is normal
    # for an SDK closing its connection. Those lines stay out of notebooks unless a user sets the level.
    proton_logger = logging.getLogger("proton")
    if proton_logger.level == logging.NOTSET:
        proton_logger.setLevel(logging.CRITICAL)


def _widen_backlog(acceptor: object) -> None:
    # proton listens with a backlog of 10, so a burst of connections waits for SYN retries (1 s
    # each). Listening again on the same socket raises the backlog.
    # NOTE: this reaches into proton's private Acceptor._selectable (python-qpid-proton 0.40).
    sock = getattr(getattr(acceptor, "_selectable", None), "_delegate", None)
    if isinstance(sock, socket.socket):
        sock.listen(socket.SOMAXCONN)
    else:
        logger.debug("proton's acceptor has no socket to widen the backlog of; keeping proton's backlog")
