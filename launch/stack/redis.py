"""Redis, durable like a production Redis (append-only file synced at every write): the pipeline does not rewrite
windows that were final, so a Redis that came back empty would stay wrong.
"""
from __future__ import annotations

import shutil
import socket

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
        conf.write_text(f'bind 127.0.0.1\nport {self.cfg.redis_port}\ndaemonize no\ndir {self.dir}\n'
                        'save ""\nappendonly yes\nappendfsync always\nprotected-mode yes\n')
        self.proc.spawn([binary, str(conf)])
        wait_ready('PING', self.proc, self._ping)

    def _ping(self) -> bool:
        with socket.create_connection(('127.0.0.1', self.cfg.redis_port), timeout=1) as sock:
            sock.sendall(b'PING\r\n')
            return sock.recv(16).startswith(b'+PONG')
