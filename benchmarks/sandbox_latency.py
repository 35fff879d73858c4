"""Sandbox latency: a trivial task through `Sandbox.run` against raw `podman run` with the same flags, same run.

Also 20 concurrent tasks (each sleeps 0.5 s) through one Sandbox, counting failures. Run as root on a host set
up by `bash .ci/setup-sandbox`:

    python benchmarks/sandbox_latency.py [--runs 20]

The CLI side runs `podman run --rm` as the sandbox user with the flags translated from the very spec the Sandbox
creates (network none, cap-drop ALL, read-only, no-new-privileges, noexec tmpfs, read-only scripts mount, the
rlimits, the per-run user, the log size cap), so both sides start the same container; the target is <= 1.2x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import report  # noqa: E402
from engine.sandbox.podman_service import PodmanService, user_info  # noqa: E402
from engine.sandbox.policy import HostLimits, RunLimits, build_spec, plan_limits  # noqa: E402
from engine.sandbox.runner import Sandbox, SandboxConfig  # noqa: E402

SCRIPTS = {"trivial.sh": "exit 0\n", "work.sh": "echo start\nsleep 0.5\necho done\n"}


def cli_args(spec: dict[str, Any]) -> list[str]:
    """`podman run` flags equal to a libpod spec built by engine.sandbox_policy.build_spec."""
    args = ["run", "--rm", "--network", spec["netns"]["nsmode"], "--cap-drop", "ALL", "--read-only",
            "--security-opt", "no-new-privileges", "--user", spec["user"],
            "--log-opt", f"max-size={spec['log_configuration']['size']}", "--shm-size", str(spec["shm_size"])]
    tmp, scripts = spec["mounts"]
    args += ["--tmpfs", f"/tmp:{','.join(tmp['options'])}"]
    args += ["-v", f"{scripts['source']}:/scripts:ro,noexec,nosuid,nodev"]
    for limit in spec["r_limits"]:
        args += ["--ulimit", f"{limit['type']}={limit['soft']}:{limit['hard']}"]
    for key, value in spec["env"].items():
        args += ["--env", f"{key}={value}"]
    for key, value in spec["labels"].items():
        args += ["--label", f"{key}={value}"]
    return [*args, spec["image"], *spec["command"]]


def podman_cli(user: str, args: list[str]) -> float:
    info = user_info(user)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": info.home, "USER": info.name,
           "XDG_RUNTIME_DIR": f"/tmp/podman-run-{info.uid}"}
    started = time.perf_counter()
    done = subprocess.run(["podman", *args], env=env, cwd="/", capture_output=True, check=False,
                          user=info.uid, group=info.gid, extra_groups=[])
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"podman run failed: {done.stderr.decode()[-500:]}")
    return elapsed


def make_scripts() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="herald-bench-", dir="/tmp"))
    folder.chmod(0o755)
    for name, body in SCRIPTS.items():
        (folder / name).write_text(body)
        (folder / name).chmod(0o644)
    return folder


async def main(runs: int, concurrent: int) -> None:
    config = SandboxConfig()
    folder = make_scripts()
    service = PodmanService()
    url = service.start(config.user)
    sb = Sandbox(config=config.model_copy(update={"podman_url": url, "autostart": False}), scripts_dir=folder)
    try:
        await sb.start()
        assert sb.problem is None, sb.problem
        # The same spec the Sandbox builds (one fixed per-run uid for the CLI side).
        from podman import PodmanClient

        with PodmanClient(base_url=url) as client:
            host_info = client.info()
            podman_version = client.version()["Version"]
        host = HostLimits.from_info(host_info["host"])
        limits = RunLimits.for_run(config, timeout_s=30, memory=None, network=None)
        spec = build_spec(config=config, argv=["/bin/sh", "/scripts/trivial.sh"], scripts_src=str(folder),
                          task_id="bench-cli", limits=limits, plan=plan_limits(limits, host), host=host,
                          run_uid=20000)
        args = cli_args(spec)
        for _ in range(3):  # warm-up: image layers, page cache, the service's first requests
            await sb.run("trivial.sh", [], timeout_s=30, task_id="bench-warm")
            await asyncio.to_thread(podman_cli, config.user, args)
        api: list[float] = []
        cli: list[float] = []
        for i in range(runs):  # interleaved, so load changes hit both sides alike
            started = time.perf_counter()
            result = await sb.run("trivial.sh", [], timeout_s=30, task_id=f"bench-{i}")
            api.append(time.perf_counter() - started)
            assert result.exit_code == 0, result
            cli.append(await asyncio.to_thread(podman_cli, config.user, args))

        async def one(i: int) -> float:
            t0 = time.perf_counter()
            result = await sb.run("work.sh", [], timeout_s=60, task_id=f"bench-par-{i}")
            if result.exit_code != 0 or result.output != "start\ndone\n":
                raise RuntimeError(f"task {i}: exit {result.exit_code}, output {result.output!r}")
            return time.perf_counter() - t0

        wall_started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(i) for i in range(concurrent)), return_exceptions=True)
        wall = time.perf_counter() - wall_started
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        lat = [o for o in outcomes if isinstance(o, float)]
    finally:
        await sb.close()
        service.stop()
        shutil.rmtree(folder, ignore_errors=True)

    def ms(values: list[float]) -> tuple[float, float, float]:
        return (round(statistics.median(values) * 1000, 1), round(min(values) * 1000, 1),
                round(max(values) * 1000, 1))

    api_med, api_min, api_max = ms(api)
    cli_med, cli_min, cli_max = ms(cli)
    ratio = round(api_med / cli_med, 2)
    rows = [
        ["Sandbox.run (trivial)", runs, api_med, api_min, api_max, ""],
        ["podman run --rm (CLI, same flags)", runs, cli_med, cli_min, cli_max, ""],
        ["ratio Sandbox/CLI (median)", "", "", "", "", f"{ratio}x (target <= 1.2x)"],
        [f"{concurrent} concurrent work.sh (0.5 s each)", concurrent,
         round(statistics.median(lat) * 1000, 1) if lat else "", round(min(lat) * 1000, 1) if lat else "",
         round(max(lat) * 1000, 1) if lat else "", f"wall {wall:.2f} s, failures {len(failures)}"],
    ]
    report("sandbox_latency", ["case", "n", "median_ms", "min_ms", "max_ms", "note"], rows,
           podman=podman_version, runtime=host_info["host"]["ociRuntime"]["name"],
           cgroup=host.cgroup_version, rootless=host.rootless, ratio=ratio, concurrent_wall_s=round(wall, 2),
           concurrent_failures=[str(f) for f in failures], cores=os.cpu_count())
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=20)
    ns = parser.parse_args()
    asyncio.run(main(ns.runs, ns.concurrent))
