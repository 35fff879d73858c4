"""`herald worker`: run tasks from the Redis queue on this machine, in this machine's sandbox."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

from engine.cli.common import EXIT_OK, EXIT_USAGE, add_config_args, load_for
from engine.core.config import Config

log = logging.getLogger("herald.worker")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser(
        "worker", help="run tasks from the Redis queue (needs [queue] redis_url)",
        description="Take tasks from the Redis stream named in the config's [queue] section and run them in this "
                    "machine's sandbox. Several workers share the work; a task of a worker that dies is taken "
                    "over by another after [queue] claim_idle_s.")
    add_config_args(worker)
    worker.add_argument("--name", help="this worker's name in the consumer group (default: HOST-PID)")
    worker.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace) -> int:
    config = load_for(args)
    if not config.queue.redis_url:
        print("herald worker: the config has no [queue] redis_url; without it tasks run inside `herald run`")
        return EXIT_USAGE
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(_serve(config, name))
    return EXIT_OK


async def _serve(config: Config, name: str) -> None:
    from engine.sandbox.runner import Sandbox
    from engine.tasks.queue import TaskWorkers
    from engine.tasks.redis_queue import RedisWorker

    sandbox = Sandbox(config=config.sandbox, scripts_dir=config.scripts_folder, owner=f"worker-{name}")
    await sandbox.start()
    await sandbox.remove_leftovers()  # of an earlier run under this name (a worker's tasks are not adopted yet)
    runner = TaskWorkers(queue=None, sandbox=sandbox, on_finished=_nothing)
    worker = RedisWorker(config.queue, name=name, run_task=runner.execute)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.ensure_future(worker.run()), asyncio.ensure_future(runner.monitor())]
    print(f"herald worker {name} ready", flush=True)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.close()
        await sandbox.close()


async def _nothing(_task: object) -> None:
    return None
