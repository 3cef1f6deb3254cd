"""Which brokers the configuration accepts, and what it passes on for Sentinel."""

from __future__ import annotations

import re
import subprocess

import pytest

from holdscan.lab.cluster import HOLDSCAN
from shared import config as config_mod
from shared.celeryapp import make_app, transport_options
from shared.config import ConfigError
from shared.redisurl import SentinelURL

URL = "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"


def load(**env: str) -> config_mod.Config:
    return config_mod.load(env=env)


def test_sentinel_url_parts() -> None:
    s = SentinelURL.parse(URL)
    assert s.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (s.password, s.db, s.username) == ("s3cret", 2, None)


@pytest.mark.parametrize("url, says", [
    ("sentinel://", "not sentinel://HOST:PORT"),
    ("sentinel://h1:26379;redis://h2:6379", "not sentinel://HOST:PORT"),
    ("sentinel://h1:26379/zero", "not a number"),
    ("sentinel://:a@h1:26379;sentinel://:b@h2:26379", "password once"),
    ("sentinel://h1:notaport", "Port"),
])
def test_malformed_sentinel_urls_are_refused_with_the_form(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(HOLDSCAN_BROKER=url)
    assert says.lower() in str(e.value).lower() and "sentinel://" in str(e.value)
    assert "\n" not in str(e.value)


def test_sentinel_settings_reach_celery_and_the_content_store() -> None:
    cfg = load(HOLDSCAN_BROKER=URL, HOLDSCAN_SENTINEL_MASTER="mail",
               HOLDSCAN_SENTINEL_PASSWORD="sentinel-pw")
    options = transport_options(cfg)
    assert options["master_name"] == "mail"
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert options["visibility_timeout"] == cfg.broker.visibility_timeout
    assert make_app(cfg).conf.broker_transport_options == options
    store = cfg.content_store(socket_timeout=1, socket_connect_timeout=1)
    pool = store.connection_pool
    # redis-py's Sentinel pool: it asks these Sentinels for the master of "mail".
    assert pool.service_name == "mail"
    assert [c.connection_pool.connection_kwargs["port"]
            for c in pool.sentinel_manager.sentinels] == [26379, 26380, 26379]
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] \
        == "sentinel-pw"
    assert pool.connection_kwargs["password"] == "s3cret" and pool.connection_kwargs["db"] == 2


def test_plain_redis_has_no_sentinel_options() -> None:
    cfg = load(HOLDSCAN_BROKER="redis://127.0.0.1:6379/0")
    assert set(transport_options(cfg)) == {"visibility_timeout"}


def test_content_store_may_be_sentinel_or_unix_but_the_broker_not_unix() -> None:
    assert load(HOLDSCAN_CONTENT_URL=URL).content_url == URL
    assert load(HOLDSCAN_CONTENT_URL="unix:///run/redis/redis.sock").content_url
    with pytest.raises(ConfigError, match="not a Redis URL"):
        load(HOLDSCAN_BROKER="unix:///run/redis/redis.sock")
    cfg = load(HOLDSCAN_BROKER=URL)
    cfg.broker.sentinel_master = ""
    with pytest.raises(ConfigError, match="sentinel_master"):
        config_mod.validate(cfg)


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672//", "amqps://h/vhost",
                                 "pyamqp://h//"])
def test_amqp_is_refused_saying_what_to_use(url: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(HOLDSCAN_BROKER=url)
    text = str(e.value)
    assert "not supported" in text and "redis://" in text and "sentinel://" in text
    assert "guest" not in text


def test_worker_refuses_amqp_at_start_in_one_line() -> None:
    p = subprocess.run([HOLDSCAN, "worker", "--broker", "amqp://127.0.0.1//"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "AMQP (RabbitMQ) brokers are not supported" in p.stderr


def test_workers_map_store_names_to_urls_and_name_what_is_missing(tmp_path) -> None:
    path = tmp_path / "w.toml"
    path.write_text('[broker]\nurl = "redis://b:6379/0"\n'
                    '[broker.content_stores]\nmx1 = "redis://:pw@mx1:6379/0"\n')
    cfg = config_mod.load(path, env={})
    assert cfg.store_url("") == "redis://b:6379/0"
    assert cfg.store_url("mx1") == "redis://:pw@mx1:6379/0"
    with pytest.raises(config_mod.UnknownStore) as e:
        cfg.store_url("mx2")
    assert "add `mx2 = \"redis://...\"` (its URL) under [broker.content_stores]" in str(e.value)


def test_a_dispatcher_finds_its_own_store_by_name_when_content_url_is_empty(tmp_path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[broker]\ncontent_store = "mx1"\n'
                    '[broker.content_stores]\nmx1 = "redis://mx1:6379/0"\n')
    assert config_mod.load(path, env={}).content_url == "redis://mx1:6379/0"
    assert load(HOLDSCAN_CONTENT_STORE="mx9").broker.content_store == "mx9"


@pytest.mark.parametrize("toml, says", [
    ('content_store = "redis://mx1:6379/0"', "broker.content_store: 'redis://mx1:6379/0' is not"),
    ('[broker.content_stores]\n"mx 1" = "redis://mx1:6379/0"', "'mx 1' is not a store name"),
    ('[broker.content_stores]\nmx1 = "http://mx1/"', "broker.content_stores.mx1:"),
    ('[broker.content_stores]\nmx1 = 5', "must be a Redis URL string"),
])
def test_bad_store_names_and_urls_are_refused(tmp_path, toml: str, says: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[broker]\n{toml}\n")
    with pytest.raises(ConfigError, match=re.escape(says)):
        config_mod.load(path, env={})


def test_a_queue_per_store_names_each_hosts_queue_and_workers_take_from_all(tmp_path) -> None:
    from shared.celeryapp import send_queue, worker_queues

    path = tmp_path / "c.toml"
    path.write_text('[broker]\nqueue_per_store = true\ncontent_store = "mx1"\n'
                    '[broker.content_stores]\nmx2 = "redis://mx2:6379/0"\n'
                    'mx1 = "redis://mx1:6379/0"\n')
    cfg = config_mod.load(path, env={})
    assert send_queue(cfg) == "holdscan.mx1"
    assert worker_queues(cfg) == ["holdscan", "holdscan.mx1", "holdscan.mx2"]
    cfg.broker.queue_per_store = False
    assert send_queue(cfg) == "holdscan" and worker_queues(cfg) == ["holdscan"]
