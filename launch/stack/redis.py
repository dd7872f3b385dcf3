"""Redis, durable like a production Redis (append-only file synced at every write): the pipeline does not rewrite
windows that were final, so a Redis that came back empty would stay wrong.
"""
from __future__ import annotations

import shutil
import socket

from launch.stack import secrets
from launch.stack.component import Component, StackError, wait_ready


class Redis(Component):
    name = 'redis'
    port_settings = ('redis_port',)

    def start(self) -> None:
        binary = shutil.which('redis-server')
        if not binary:
            raise StackError('redis-server not found: run `make install` (it installs the Debian package).')
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / 'redis.conf'
        # Durable like a production Redis: the pipeline resumes from committed Kafka offsets and does not rewrite
        # windows that were final, so a Redis that came back empty (a restart, `stack down` + `up`) would stay
        # wrong. The append-only file is synced at every write (the sink writes in pipelined batches, one sync each),
        # so not even a SIGKILL loses an acknowledged write.
        text = (f'bind 127.0.0.1\nport {self.cfg.redis_port}\ndaemonize no\ndir {self.dir}\n'
                'save ""\nappendonly yes\nappendfsync always\nprotected-mode yes\n')
        if self.cfg.redis_auth != 'none':
            # One ACL user with a password (from the state directory's secrets); the password-less default user
            # is off. In the configuration file, never on the command line.
            text += (f'user default off\nuser {secrets.REDIS_USER} on '
                     f'>{secrets.password(self.cfg.state_dir, "redis")} ~* &* +@all\n')
        secrets.write_private(conf, text)
        self.proc.spawn([binary, str(conf)])
        wait_ready('PING', self.proc, self._ping)

    def _ping(self) -> bool:
        with socket.create_connection(('127.0.0.1', self.cfg.redis_port), timeout=1) as sock:
            credentials = self.cfg.redis_credentials()
            if credentials:  # AUTH username password, as a RESP array (nothing to escape)
                parts = [b'AUTH', credentials['username'].encode(), credentials['password'].encode()]
                sock.sendall(b'*3\r\n' + b''.join(b'$%d\r\n%s\r\n' % (len(p), p) for p in parts))
                if not sock.recv(16).startswith(b'+OK'):
                    return False
            sock.sendall(b'PING\r\n')
            return sock.recv(16).startswith(b'+PONG')
