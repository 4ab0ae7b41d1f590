"""`workbook emulator`: run the local Service Bus emulator in the foreground for any SDK."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from workbook.cli import CliError
from workbook.config import EMULATOR_KEY, EMULATOR_KEY_VARIABLE, ConfigError, emulator_key
from workbook.paths import data_dir
from workbook.servicebus import LocalServiceBusEmulator

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `emulator` subcommand."""
    parser = subparsers.add_parser(
        "emulator",
        help="run the local Service Bus emulator in the foreground",
        description=(
            "Serve Service Bus queues over AMQP 1.0 on HOST:PORT until interrupted. Any Service Bus SDK "
            "connects with the printed connection string (UseDevelopmentEmulator=true). The key defaults "
            f"to the emulator's published development key; set {EMULATOR_KEY_VARIABLE} to use your own."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5672, help="TCP port; 0 picks a free one (default: 5672)")
    parser.add_argument(
        "--config",
        type=Path,
        default=data_dir() / "servicebus-config.json",
        help="entity configuration in the format of Microsoft's emulator Config.json (default: %(default)s)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="SQLite file that keeps messages across restarts (default: temporary)",
    )
    parser.add_argument(
        "--key-name", default="RootManageSharedAccessKey", help="SharedAccessKeyName clients use"
    )
    parser.set_defaults(handler=run_emulator)


def run_emulator(args: argparse.Namespace) -> int:
    """Start the emulator, print its connection string and serve until SIGINT or SIGTERM."""
    try:
        key = emulator_key()
    except ConfigError as error:
        raise CliError(str(error)) from error
    emulator = LocalServiceBusEmulator(
        args.config, host=args.host, port=args.port, store=args.store, key_name=args.key_name, key=key
    )
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())

    with emulator:
        # The default key is public, so the full string may be shown; a key of the user's own stays masked.
        shown = emulator.connection_string if key == EMULATOR_KEY else emulator.connection.masked()
        print(f"Service Bus emulator listening on {emulator.host}:{emulator.port}", flush=True)
        print(f"queues: {', '.join(emulator.config.queue_names())}", flush=True)
        print(f"connection string: {shown}", flush=True)
        while not stop.wait(0.5):
            if not emulator.running:
                logger.error("the emulator's reactor stopped; exiting")
                return 1
    print("Service Bus emulator stopped", flush=True)
    return 0
