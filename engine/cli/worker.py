"""`herald worker`: run tasks from the Redis queue on this machine, in this machine's sandbox."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

from engine.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_config_args, load_for
from engine.core.config import Config

log = logging.getLogger("herald.worker")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser(
        "worker", help="run tasks from the Redis queue (needs [queue] redis_url)",
        description="Take tasks from the Redis stream named in the config's [queue] section and run them in this "
                    "machine's sandbox. Several workers share the work; a task of a worker that dies is taken "
                    "over by another after [queue] claim_idle_s. Needs the engine's [queue] signing key, and a "
                    "Redis that asks for a password (or [queue] allow_unauthenticated = true). Rides out Redis "
                    "outages; exits non-zero if its loop ends for any other reason.")
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
    return asyncio.run(_serve(config, name))


async def _serve(config: Config, name: str) -> int:
    """Run until SIGINT/SIGTERM (EXIT_OK), or until a loop ends by itself (EXIT_FAILED: a worker that does not
    take tasks must not look alive). A QueueError (no key, an open or refusing Redis) is raised before anything
    runs."""
    from engine.sandbox.runner import Sandbox
    from engine.tasks.queue import TaskWorkers
    from engine.tasks.redis_link import Link
    from engine.tasks.redis_worker import RedisWorker
    from engine.tasks.signing import EntrySigner, load_key

    signer = EntrySigner(load_key(config.queue))
    link = Link(config.queue)
    try:
        await link.start()
    except BaseException:
        await link.close()
        raise
    sandbox = Sandbox(config=config.sandbox, scripts_dir=config.scripts_folder, owner=f"worker-{name}")
    runner = TaskWorkers(queue=None, sandbox=sandbox, on_finished=_nothing)
    worker = RedisWorker(config.queue, name=name, host=socket.gethostname(), link=link, signer=signer,
                         run_task=runner.execute, take_over=runner.take_over, cancel_task=runner.cancel)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    try:
        await sandbox.start()
        # Of an earlier run under this name: the ones that never started. A started one is adopted by the worker
        # that takes its task over (engine.tasks.recovery.take_over), this one included.
        await sandbox.remove_leftovers(keep_started=True)
        tasks = [asyncio.create_task(worker.run(), name="worker-loop"),
                 asyncio.create_task(runner.monitor(), name="task-monitor")]
        stopping = asyncio.create_task(stop.wait(), name="stop-signal")
        print(f"herald worker {name} ready", flush=True)
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        ended = [task for task in tasks if task.done()]
        for task in ended:
            error = None if task.cancelled() else task.exception()
            log.error("herald worker %s: %s ended%s; exiting", name, task.get_name(),
                      f": {type(error).__name__}: {error}" if error else "", exc_info=error)
        return EXIT_FAILED if ended else EXIT_OK
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await link.close()
        await sandbox.close()


async def _nothing(_task: object) -> None:
    return None
