#!/bin/bash
# As the official redis image: options or a .conf file go to redis-server, which runs as user redis.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = 'redis-server' ]; then
  # Without a config file Redis would only accept loopback clients (protected mode); the official
  # image turns that off, since the container's port is the only way in.
  if [ "${2%.conf}" = "${2:-}" ]; then set -- "$@" --protected-mode no; fi
  find . \! -user redis -exec chown redis '{}' +
  exec gosu redis "$@"
fi
exec "$@"
