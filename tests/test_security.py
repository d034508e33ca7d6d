"""Secured connections end to end: Kafka over mutual TLS (stunnel in front of the
broker), Redis with a password over TLS with client certificates; SASL settings as
they reach the clients (no broker with SASL users runs here)."""

from __future__ import annotations

import asyncio
import ssl

import faust
import pytest
import redis

from stream_app.connections import KafkaConfig, RedisConfig
from stream_app.embedded import EmbeddedBroker, RedisServer, free_port
from stream_app.kafka_io import Producer, ensure_topics
from stream_app.store import Store, connect
from tests.conftest import make_settings
from tests.harness import running, wait_catalog
from tests.tls import OPENSSL, STUNNEL, Stunnel, make_certs

needs_tls_tools = pytest.mark.skipif(not (OPENSSL and STUNNEL),
                                     reason="needs openssl and stunnel (apt: stunnel4)")
PASSWORD = "s3cret-pass"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not OPENSSL:
        pytest.skip("needs openssl")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_redis(certs):
    port = free_port()
    server = RedisServer(port, "--port", "0", "--tls-port", str(port),
                         "--tls-cert-file", str(certs["server.crt"]),
                         "--tls-key-file", str(certs["server.key"]),
                         "--tls-ca-cert-file", str(certs["ca.crt"]),
                         "--tls-auth-clients", "yes", "--requirepass", PASSWORD).start()
    yield port
    server.stop()


def _redis(port: int, certs, **changes) -> RedisConfig:
    base = dict(url=f"rediss://127.0.0.1:{port}/0", password=PASSWORD,
                ssl_ca_file=str(certs["ca.crt"]), ssl_certfile=str(certs["client.crt"]),
                ssl_keyfile=str(certs["client.key"]))
    return RedisConfig(**{**base, **changes})


def test_redis_with_a_password_over_mutual_tls(tls_redis, certs):
    assert _redis(tls_redis, certs).sync_client().ping()
    with pytest.raises(redis.AuthenticationError):
        _redis(tls_redis, certs, password="wrong").sync_client().ping()
    with pytest.raises(redis.ConnectionError):  # no client certificate
        _redis(tls_redis, certs, ssl_certfile="", ssl_keyfile="").sync_client().ping()
    with pytest.raises(redis.ConnectionError):  # plaintext against the TLS port
        RedisConfig(f"redis://127.0.0.1:{tls_redis}/0", password=PASSWORD) \
            .sync_client(socket_connect_timeout=2, socket_timeout=2).ping()

    async def go():  # the asyncio client the workers use
        store = Store(connect(_redis(tls_redis, certs)), "satest-tls")
        await store.incr_stats({"x": 1})
        assert (await store.stats())["x"] == 1
        await store.delete_prefix()
        await store.r.aclose()
    asyncio.run(go())


@needs_tls_tools
@pytest.mark.integration
def test_a_worker_over_mutual_tls_to_kafka_and_redis(tls_redis, certs, sample_catalog,
                                                     tmp_path):
    """Every client (the worker's Faust consumer and producer, the admin client, the
    test's producer and consumer) goes through TLS with a client certificate; the broker
    advertises only the TLS address."""
    plain = free_port()
    tls = Stunnel(certs, plain, tmp_path)
    broker = EmbeddedBroker(plain, advertised=f"127.0.0.1:{tls.port}")
    try:
        broker.start()
        tls.start()
        r = _redis(tls_redis, certs)
        settings = make_settings(f"127.0.0.1:{tls.port}", r.url, "tls").replace(
            kafka_security_protocol="SSL", kafka_ssl_cafile=str(certs["ca.crt"]),
            kafka_ssl_certfile=str(certs["client.crt"]),
            kafka_ssl_keyfile=str(certs["client.key"]),
            redis_password=PASSWORD, redis_ssl_ca_file=r.ssl_ca_file,
            redis_ssl_certfile=r.ssl_certfile, redis_ssl_keyfile=r.ssl_keyfile)
        with running(settings, tmp_path) as h:
            worker = h.start_worker()
            worker.wait_healthy(120)
            h.produce(settings.topic_items, sample_catalog[:10], key_field="item_id")
            wait_catalog([worker], 10)
            events = [{"event_id": f"tls-{n}", "user_id": f"tu{n % 3}", "type": "click",
                       "item_id": sample_catalog[n]["item_id"], "ts": 1_760_000_000.0 + n}
                      for n in range(6)]
            h.produce(settings.topic_activity, events)
            recs = h.recommendations_for({e["event_id"] for e in events}, timeout=90)
            assert {x["event_id"] for x in recs} == {e["event_id"] for e in events}

        # without a client certificate the terminator refuses the connection
        no_cert = KafkaConfig(f"127.0.0.1:{tls.port}", "SSL", ssl_cafile=str(certs["ca.crt"]))
        with pytest.raises(Exception):
            asyncio.run(asyncio.wait_for(ensure_topics(no_cert, ["refused"], 1, 1), 20))
    finally:
        tls.stop()
        broker.stop()


def test_sasl_settings_reach_every_client():
    """No broker with SASL users runs here (tansu creates users only through an
    unauthenticated connection, and its memory storage starts empty): what each client
    is given is checked instead."""
    k = KafkaConfig("b1:9093,b2:9093", "SASL_SSL", "SCRAM-SHA-512", "app", "pw")
    args = k.client_args()
    assert args["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert (args["security_protocol"], args["sasl_mechanism"], args["sasl_plain_username"],
            args["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "app", "pw")
    assert isinstance(args["ssl_context"], ssl.SSLContext)
    creds = k.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.mechanism.value, creds.protocol.value, creds.username) == \
        ("SCRAM-SHA-512", "SASL_SSL", "app")
    plain = KafkaConfig("b1:9092", "SASL_PLAINTEXT", "PLAIN", "app", "pw").client_args()
    assert plain["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in plain
    assert "pw" not in repr(k)

    async def construct():  # aiokafka validates the combination when a client is made
        Producer(k)
    asyncio.run(construct())


@pytest.mark.parametrize("changes,message", [
    (dict(security_protocol="SASL_SSL"), "needs STREAM_APP_KAFKA_SASL_USERNAME"),
    (dict(security_protocol="TLS"), "must be one of"),
    (dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="GSSAPI", sasl_username="u",
          sasl_password="p"), "STREAM_APP_KAFKA_SASL_MECHANISM must be one of"),
    (dict(security_protocol="SSL", ssl_keyfile="k.pem"), "needs STREAM_APP_KAFKA_SSL_CERTFILE"),
])
def test_inconsistent_kafka_security_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        KafkaConfig("b:9092", **changes)


def test_settings_hide_passwords():
    from stream_app.config import Settings

    s = Settings().replace(kafka_sasl_password="pw1", redis_password="pw2")
    assert "pw1" not in repr(s) and "pw2" not in repr(s)
    assert s.kafka().sasl_password == "pw1" and s.redis().password == "pw2"
    assert "pw3" not in repr(RedisConfig("redis://u:pw3@h:6379/0"))


@pytest.mark.integration
def test_http_needs_the_token_except_probes_and_metrics(kafka_bootstrap, redis_url,
                                                        sample_catalog, tmp_path):
    import urllib.request

    from tests.harness import http

    settings = make_settings(kafka_bootstrap, redis_url, "token").replace(api_token="t0ken")
    with running(settings, tmp_path) as h:
        worker = h.start_worker()
        worker.wait_healthy(120)
        h.produce(settings.topic_items, sample_catalog[:10], key_field="item_id")
        wait_catalog([worker], 10, token="t0ken")
        h.produce(settings.topic_activity, [
            {"event_id": "tok-1", "user_id": "tok-u", "type": "text",
             "text": "my secret wish: space operas", "ts": 1_760_000_000.0}])
        (rec,) = h.recommendations_for({"tok-1"})
        assert all("space operas" not in i["reason"] for i in rec["items"])
        assert any(i["reason"].endswith("what you wrote") for i in rec["items"])
        for path in ("/stats", "/users/tok-u/interests", "/users/tok-u/recommendations"):
            status, body = http(worker, path)
            assert status == 401, path
        for path in ("/healthz", "/readyz", "/metrics"):
            assert http(worker, path)[0] == 200, path
        for path in ("/router/", "/table/", "/graph/", "/stats/"):  # Faust's own pages
            assert http(worker, path)[0] == 404, path

        def authorized(path: str, token: str):
            req = urllib.request.Request(worker.url + path,
                                         headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as err:
                return err.code, err.read()

        assert authorized("/users/tok-u/interests", "wrong")[0] == 401
        status, body = authorized("/users/tok-u/interests", "t0ken")
        assert status == 200 and b"space operas" not in body
