"""How to reach Kafka and Redis: endpoints, credentials and TLS, one dataclass each.

Every client the project makes (Faust workers and trainer, the CLI's producers and
consumers, the admin client, Redis) is built from these, so one set of settings
secures them all. ``Settings.kafka()`` and ``Settings.redis()`` make them.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _tls_context(cafile: str, certfile: str, keyfile: str, key_password: str,
                 check_hostname: bool) -> ssl.SSLContext:
    """A client context trusting ``cafile`` (else the system's CAs), presenting a client
    certificate when one is given (mutual TLS)."""
    context = ssl.create_default_context(cafile=cafile or None)
    context.check_hostname = check_hostname
    if certfile:
        context.load_cert_chain(certfile, keyfile or None, key_password or None)
    return context


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: str = ""
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.security_protocol not in KAFKA_PROTOCOLS:
            raise ValueError(f"STREAM_APP_KAFKA_SECURITY_PROTOCOL must be one of "
                             f"{', '.join(KAFKA_PROTOCOLS)}, not {self.security_protocol!r}")
        if self.sasl and self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"STREAM_APP_KAFKA_SASL_MECHANISM must be one of "
                             f"{', '.join(SASL_MECHANISMS)}, not {self.sasl_mechanism!r}")
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"{self.security_protocol} needs STREAM_APP_KAFKA_SASL_USERNAME "
                             "and STREAM_APP_KAFKA_SASL_PASSWORD")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("STREAM_APP_KAFKA_SSL_KEYFILE needs STREAM_APP_KAFKA_SSL_CERTFILE")

    def __repr__(self) -> str:  # never a password in a log line
        return (f"KafkaConfig(bootstrap={self.bootstrap!r}, "
                f"security_protocol={self.security_protocol!r})")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def servers(self) -> list[str]:
        return [h.strip() for h in (self.bootstrap or "127.0.0.1:9092").split(",")
                if h.strip()]

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return _tls_context(self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile,
                            self.ssl_key_password, self.ssl_check_hostname)

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments of every aiokafka client (producer, consumer, admin)."""
        args: dict[str, Any] = {"bootstrap_servers": self.servers(),
                                "security_protocol": self.security_protocol}
        if self.tls:
            args["ssl_context"] = self.ssl_context()
        if self.sasl:
            args.update(sasl_mechanism=self.sasl_mechanism,
                        sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self.sasl_password)
        return args

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None: plaintext)."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(username=self.sasl_username,
                                         password=self.sasl_password,
                                         ssl_context=self.ssl_context(),
                                         mechanism=self.sasl_mechanism)
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


def kafka_config(target: "str | KafkaConfig") -> KafkaConfig:
    """A bare bootstrap string (tests, the embedded broker) is a plaintext config."""
    return target if isinstance(target, KafkaConfig) else KafkaConfig(target)


@dataclass(frozen=True)
class RedisConfig:
    url: str
    cluster: bool = False
    username: str = ""  # an ACL user (else the URL's, else the default user)
    password: str = ""  # else the URL's
    ssl_ca_file: str = ""  # for rediss:// URLs; empty: the system's CAs
    ssl_certfile: str = ""  # a client certificate (mutual TLS)
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True

    def __repr__(self) -> str:
        return f"RedisConfig(url={self.shown_url!r}, cluster={self.cluster})"

    @property
    def shown_url(self) -> str:
        """The URL as a log line or a message may show it: no password."""
        return _without_password(self.url)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``from_url`` beyond the URL."""
        out: dict[str, Any] = {}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        if self.url.startswith("rediss://"):
            out.update(ssl_ca_certs=self.ssl_ca_file or None,
                       ssl_certfile=self.ssl_certfile or None,
                       ssl_keyfile=self.ssl_keyfile or None,
                       ssl_check_hostname=self.ssl_check_hostname)
        return out

    def client(self) -> Any:
        """An asyncio client; create it inside the running loop."""
        import redis.asyncio as aioredis

        if self.cluster:
            return aioredis.RedisCluster.from_url(self.url, **self.options())
        return aioredis.Redis.from_url(self.url, **self.options())

    def sync_client(self, **extra: Any) -> Any:
        import redis

        return redis.Redis.from_url(self.url, **self.options(), **extra)


def redis_config(target: "str | RedisConfig") -> RedisConfig:
    return target if isinstance(target, RedisConfig) else RedisConfig(target)


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url
