"""The secrets of a local stack with authentication on: generated at the first `up` into <state dir>/secrets/
(directory 0700, files 0600), read from files by every component and client, never passed as a flag.

    <state dir>/secrets/
        kafka-client.password      SASL password of the user `engagement` (SCRAM-SHA-512 and PLAIN)
        kafka-broker.password      SASL password of the broker's own user (inter-broker, and the stack's admin)
        kafka-keystore.password    the broker's PKCS12 key store
        kafka-ca.pem               the broker's self-signed certificate: the clients' trust anchor
        postgres.password          the `postgres` role's password (scram-sha-256)
        pgpass                     the same in libpq's password-file format (PGPASSFILE, passfile=)
        redis.password             the Redis ACL user `engagement`
        settings.json              which authentication this state directory was made with

Standard library only (the stack's configuration imports it).
"""
from __future__ import annotations

import os
import secrets as random_secrets
from pathlib import Path

KAFKA_CLIENT_USER = 'engagement'
KAFKA_BROKER_USER = 'broker'
REDIS_USER = 'engagement'
PG_USER = 'postgres'


def secrets_dir(state_dir: Path) -> Path:
    return state_dir / 'secrets'


def password_file(state_dir: Path, name: str) -> Path:
    return secrets_dir(state_dir) / f'{name}.password'


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path`, readable by its owner only from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.name == 'secrets':  # <state dir>/secrets: its owner only (other directories keep their mode)
        os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def password(state_dir: Path, name: str) -> str:
    """The password `name` of this state directory, generated (192 random bits, URL-safe) on first use."""
    path = password_file(state_dir, name)
    if not path.exists():
        write_private(path, random_secrets.token_urlsafe(24))
    return path.read_text(encoding='utf-8').strip()


def read_password(state_dir: Path, name: str) -> str:
    """The password `name`; FileNotFoundError if the stack has not made it yet (run `up` first)."""
    return password_file(state_dir, name).read_text(encoding='utf-8').strip()


def kafka_ca_file(state_dir: Path) -> Path:
    return secrets_dir(state_dir) / 'kafka-ca.pem'


def pgpass_file(state_dir: Path) -> Path:
    return secrets_dir(state_dir) / 'pgpass'


def settings_file(state_dir: Path) -> Path:
    return secrets_dir(state_dir) / 'settings.json'
