"""Credentials: read from the environment or from files, never from flags (flags show in process lists), and the
one-line verdict when a service refuses them.

    password = secret('KAFKA_SASL_PASSWORD')      # $KAFKA_SASL_PASSWORD, else the file $KAFKA_SASL_PASSWORD_FILE
    redis.Redis.from_url(url, **redis_credentials())
    check_kafka(kafka_python_config)              # CredentialsRefused('Kafka at ... refused ...'), or None
    check_postgres(dsn); check_redis(url)

The checks raise only when a service answers and refuses the credentials (or the TLS handshake): a service that is
not reachable yet passes, so that a pipeline started during an outage waits for it as it always did. Messages name
the user, the mechanism and the variables to fix; never a password.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

# kafka-python setting -> Java client property, for the settings a client of ours passes.
_JAVA_NAMES = {'bootstrap_servers': 'bootstrap.servers', 'security_protocol': 'security.protocol',
               'sasl_mechanism': 'sasl.mechanism', 'client_id': 'client.id'}
_SCRAM = ('SCRAM-SHA-256', 'SCRAM-SHA-512')
# kafka-python setting -> librdkafka property, for the connection settings (the fetcher maps more).
_LIBRDKAFKA_NAMES = {'bootstrap_servers': 'bootstrap.servers', 'security_protocol': 'security.protocol',
                     'sasl_mechanism': 'sasl.mechanism', 'sasl_plain_username': 'sasl.username',
                     'sasl_plain_password': 'sasl.password', 'ssl_cafile': 'ssl.ca.location'}


class CredentialsRefused(Exception):
    """A service answered and refused our credentials (or the TLS handshake); the message is one line to print."""


def secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """$NAME if set and not empty, else the contents of the file named by $NAME_FILE (one trailing newline
    stripped), else None. A file that cannot be read is a ValueError naming the variable and the path."""
    environ = os.environ if environ is None else environ
    if environ.get(name):
        return environ[name]
    path = environ.get(f'{name}_FILE')
    if not path:
        return None
    try:
        with open(path, encoding='utf-8') as f:
            value = f.read()
    except OSError as exc:
        raise ValueError(f'{name}_FILE={path}: {exc.strerror}') from None
    return value[:-1] if value.endswith('\n') else value


def redis_credentials(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """username/password keyword arguments for `redis.Redis` from $REDIS_USERNAME and $REDIS_PASSWORD (or
    $REDIS_PASSWORD_FILE); empty when neither is set (a password in the URL then still works)."""
    environ = os.environ if environ is None else environ
    out = {}
    if environ.get('REDIS_USERNAME'):
        out['username'] = environ['REDIS_USERNAME']
    password = secret('REDIS_PASSWORD', environ)
    if password:
        out['password'] = password
    return out


def kafka_security_settings(environ: Mapping[str, str] | None = None) -> dict:
    """kafka-python security settings from the environment the pipeline's flags default to (KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, KAFKA_SSL_CAFILE),
    for the tools beside the pipeline; empty for PLAINTEXT. Secrets included: never log the result."""
    environ = os.environ if environ is None else environ
    protocol = environ.get('KAFKA_SECURITY_PROTOCOL') or 'PLAINTEXT'
    if protocol == 'PLAINTEXT':
        return {}
    out: dict = {'security_protocol': protocol}
    if environ.get('KAFKA_SASL_MECHANISM'):
        out['sasl_mechanism'] = environ['KAFKA_SASL_MECHANISM']
    if environ.get('KAFKA_SASL_USERNAME'):
        out['sasl_plain_username'] = environ['KAFKA_SASL_USERNAME']
        out['sasl_plain_password'] = secret('KAFKA_SASL_PASSWORD', environ)
    if environ.get('KAFKA_SSL_CAFILE'):
        out['ssl_cafile'] = environ['KAFKA_SSL_CAFILE']
    return out


def java_client_properties(config: dict) -> dict[str, str]:
    """kafka-python connection settings -> Java client properties (secrets included: never log the result).
    SASL PLAIN/SCRAM become `sasl.jaas.config`; a PEM `ssl_cafile` becomes a PEM trust store. Settings without
    an equivalent here are left in `config` (the caller decides)."""
    java = {}
    for name, java_name in _JAVA_NAMES.items():
        value = config.pop(name, None)
        if value is not None:
            java[java_name] = ','.join(value) if isinstance(value, (list, tuple)) else str(value)
    username, password = config.pop('sasl_plain_username', None), config.pop('sasl_plain_password', None)
    if username is not None:
        module = ('org.apache.kafka.common.security.scram.ScramLoginModule' if java.get('sasl.mechanism') in _SCRAM
                  else 'org.apache.kafka.common.security.plain.PlainLoginModule')
        java['sasl.jaas.config'] = f'{module} required username={json.dumps(username)} password={json.dumps(password)};'
    cafile = config.pop('ssl_cafile', None)
    if cafile:
        java.update({'ssl.truststore.type': 'PEM', 'ssl.truststore.location': str(cafile)})
    return java


def librdkafka_client_settings(config: dict) -> dict:
    """The connection settings (brokers, security) of kafka-python style `config` as librdkafka properties."""
    return {_LIBRDKAFKA_NAMES[name]: ','.join(value) if isinstance(value, (list, tuple)) else value
            for name, value in config.items() if name in _LIBRDKAFKA_NAMES}


def _kafka_who(config: dict) -> str:
    servers = config.get('bootstrap_servers')
    servers = ','.join(servers) if isinstance(servers, (list, tuple)) else servers
    who = f'Kafka at {servers}'
    if config.get('sasl_mechanism'):
        who += f" ({config['sasl_mechanism']}, user {config.get('sasl_plain_username')!r})"
    return who


def check_kafka(config: dict, timeout: float = 15.0) -> None:
    """CredentialsRefused if the brokers refuse `config`'s SASL credentials or the TLS handshake (kafka-python
    style settings); returns otherwise, also when no broker answers within `timeout`."""
    if str(config.get('security_protocol') or 'PLAINTEXT').upper() == 'PLAINTEXT':
        return
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    refused: list[KafkaError] = []
    done = threading.Event()

    def on_error(err: KafkaError) -> None:
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            refused.append(err)
            done.set()

    settings: dict[str, Any] = {**librdkafka_client_settings(config), 'error_cb': on_error, 'log_level': 0,
                                'socket.timeout.ms': int(timeout * 1000)}
    admin = AdminClient(settings)
    try:
        admin.list_topics(timeout=timeout)
    except Exception:  # no broker answered in time, or it refused us: error_cb says which
        admin.poll(0.5)
    if not refused:
        return
    who = _kafka_who(config)
    if refused[0].code() == KafkaError._AUTHENTICATION:
        raise CredentialsRefused(f'{who} refused the credentials: authentication failed; check KAFKA_SASL_USERNAME '
                                 'and KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)')
    raise CredentialsRefused(f'{who}: the TLS handshake failed ({_first_reason(refused[0].str())}); check '
                             'KAFKA_SSL_CAFILE')


def _first_reason(text: str) -> str:
    # librdkafka's SSL reasons are long; the first clause says what happened ("certificate verify failed", ...).
    return text.split(':', 2)[-1].strip().split(' (')[0][:160]


def check_postgres(dsn: str, timeout: float = 10.0) -> None:
    """CredentialsRefused if PostgreSQL refuses the password of `dsn` (libpq reads PGPASSWORD / PGPASSFILE)."""
    import psycopg2
    try:
        psycopg2.connect(dsn, connect_timeout=max(2, int(timeout))).close()
    except psycopg2.OperationalError as exc:
        text = str(exc)
        if 'password authentication failed' in text or 'no password supplied' in text:
            user = next((p.split('=', 1)[1] for p in dsn.split() if p.startswith('user=')), '?')
            raise CredentialsRefused(f'PostgreSQL refused the password of user {user!r}: authentication failed; '
                                     'check PGPASSWORD or PGPASSFILE') from None


def check_redis(url: str, timeout: float = 5.0, credentials: dict | None = None) -> None:
    """CredentialsRefused if Redis refuses the credentials (`credentials`, by default $REDIS_USERNAME and
    $REDIS_PASSWORD[_FILE], or the URL's)."""
    import redis
    credentials = redis_credentials() if credentials is None else credentials
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, **credentials)
    try:
        client.ping()
    except redis.AuthenticationError:
        user = credentials.get('username') or 'default'
        raise CredentialsRefused(f'Redis refused the credentials of user {user!r}: authentication failed; check '
                                 'REDIS_USERNAME and REDIS_PASSWORD (or REDIS_PASSWORD_FILE)') from None
    except redis.ResponseError as exc:
        if 'NOAUTH' in str(exc) or 'WRONGPASS' in str(exc):
            raise CredentialsRefused('Redis asks for credentials: set REDIS_USERNAME and REDIS_PASSWORD (or '
                                     'REDIS_PASSWORD_FILE)') from None
    except redis.ConnectionError:
        pass  # not reachable: the pipeline waits for it
    finally:
        client.close()
