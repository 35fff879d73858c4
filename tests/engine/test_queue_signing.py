"""The Redis queue's pure parts: entry signatures, where the signing key comes from, the [queue] settings, how
errors are sorted and how long reconnects wait. (The real thing, on a real redis-server: tests/e2e/test_redis_*.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from engine.cli.scaffold import write_starter_config
from engine.core.config import QueueConfig, load_config
from engine.core.errors import ConfigError, EntryRefused, QueueError
from engine.tasks.record import TaskParams, TaskRecord
from engine.tasks.redis_link import backoff, classify, where
from engine.tasks.signing import EntrySigner, load_key

KEY = "k" * 40
URL = "redis://herald:hunter2-password@10.0.0.5:6380/2"


def _task(**update: object) -> TaskRecord:
    return TaskRecord(platform="chat", command="/work x", run_id="r", rule="r", event_id="e",
                      params=TaskParams(script="work.sh", args=["x"], timeout=60)).model_copy(update=update)


def test_a_signed_task_reads_back_and_any_change_is_refused() -> None:
    signer = EntrySigner(KEY.encode())
    fields = signer.task_fields("herald:tasks", _task())
    assert signer.read_task("herald:tasks", fields).params.args == ["x"]
    with pytest.raises(EntryRefused, match="no signature"):
        signer.read_task("herald:tasks", {"task": fields["task"]})
    altered = fields["task"].replace('"args":["x"]', '"args":["--rm","-rf"]')
    with pytest.raises(EntryRefused, match="wrong signature"):
        signer.read_task("herald:tasks", {**fields, "task": altered})
    with pytest.raises(EntryRefused, match="wrong signature"):  # moved to another stream
        signer.read_task("other:tasks", fields)
    with pytest.raises(EntryRefused, match="wrong signature"):  # another key
        EntrySigner(b"o" * 40).read_task("herald:tasks", fields)
    with pytest.raises(EntryRefused):  # a task entry is not a result
        signer.read_result("herald:tasks", {**fields, "worker": "w1"})


def test_a_result_is_bound_to_the_worker_that_signed_it() -> None:
    signer = EntrySigner(KEY.encode())
    fields = signer.result_fields("herald:results", _task(status="succeeded", worker="w1"))
    assert signer.read_result("herald:results", fields).worker == "w1"
    with pytest.raises(EntryRefused, match="wrong signature"):
        signer.read_result("herald:results", {**fields, "worker": "w2"})
    with pytest.raises(EntryRefused, match="names no worker"):
        signer.read_result("herald:results", {k: v for k, v in fields.items() if k != "worker"})
    forged = signer.result_fields("herald:results", _task(status="succeeded", worker="w2"))
    mixed = {"task": forged["task"], "worker": "w1", "sig": signer.result_fields(
        "herald:results", _task(status="succeeded", worker="w2").model_copy(update={"worker": "w1"}))["sig"]}
    with pytest.raises(EntryRefused):
        signer.read_result("herald:results", mixed)


def test_the_key_comes_from_the_config_env_or_a_private_file(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_key(QueueConfig(signing_key=KEY)) == KEY.encode()
    with pytest.raises(QueueError, match="shorter than 32"):
        load_key(QueueConfig(signing_key="short"))
    with pytest.raises(QueueError, match="HERALD_TEST_KEY .* is not set"):
        load_key(QueueConfig(signing_key_env="HERALD_TEST_KEY"))
    monkeypatch.setenv("HERALD_TEST_KEY", KEY)
    assert load_key(QueueConfig(signing_key_env="HERALD_TEST_KEY")) == KEY.encode()
    path = tmp_path / "queue.key"
    path.write_text(KEY + "\n")
    path.chmod(0o644)
    with pytest.raises(QueueError, match="can be read by other users: chmod 600"):
        load_key(QueueConfig(signing_key_file=path))
    path.chmod(0o600)
    assert load_key(QueueConfig(signing_key_file=path)) == KEY.encode()


def test_queue_settings_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    config = tmp_path / "herald.toml"
    for body, problem in (
        (f'redis_url = "{URL}"', "a signing key is needed"),
        (f'redis_url = "{URL}"\nsigning_key = "{KEY}"\nsigning_key_env = "X"', "not several"),
        (f'redis_url = "{URL}"\nsigning_key = "{KEY}"\ntls_ca_file = "ca.pem"', "does not start with rediss://"),
        (f'redis_url = "{URL}"\nsigning_key = "{KEY}"\ntls_cert_file = "c.pem"', "go together"),
    ):
        config.write_text(f"[queue]\n{body}\n")
        with pytest.raises(ConfigError, match=problem):
            load_config(config)
    config.write_text('[queue]\nredis_url = "rediss://h/0"\nsigning_key_file = "k"\ntls_ca_file = "ca.pem"\n')
    queue = load_config(config).queue
    assert queue.signing_key_file == tmp_path / "k" and queue.tls_ca_file == tmp_path / "ca.pem"


def test_herald_init_writes_a_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "herald.toml"
    message = write_starter_config(path)
    assert "signing_key" in message
    key = load_config(path).queue.signing_key
    assert key is not None and len(key.get_secret_value()) >= 32
    assert key.get_secret_value() not in message
    assert load_config(path).queue.redis_url is None


def test_messages_name_redis_without_its_credentials() -> None:
    assert where(QueueConfig(redis_url=URL, signing_key=KEY)) == "redis://10.0.0.5:6380/2"


def test_errors_are_sorted_into_outages_refusals_and_bugs() -> None:
    assert classify(RedisConnectionError("Error 111 connecting")) == "outage"
    assert classify(ResponseError("LOADING Redis is loading the dataset in memory")) == "outage"
    assert classify(AuthenticationError("invalid username-password pair")) == "refused"
    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as exc:
            raise RedisConnectionError("Error 1 connecting") from exc
    except RedisConnectionError as exc:
        assert classify(exc) == "refused"
    assert classify(ResponseError("WRONGTYPE Operation against a key")) is None
    assert classify(ValueError("a bug")) is None


def test_reconnect_waits_grow_with_jitter_up_to_the_cap() -> None:
    waits = backoff(cap_s=2.0, first_s=0.1)
    first = [next(waits) for _ in range(10)]
    assert 0.05 <= first[0] <= 0.1 and all(1.0 <= wait <= 2.0 for wait in first[6:])
    assert len(set(first)) == len(first)  # jittered: no two processes come back in step
