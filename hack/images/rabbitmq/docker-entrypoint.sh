#!/bin/sh
# The official rabbitmq image's entry-point contract, for Debian's RabbitMQ 3.10.
# RabbitMQ reads RABBITMQ_DEFAULT_USER / _PASS / _VHOST itself (as in the official image,
# which no longer rewrites configuration); this script only keeps the Erlang cookie private
# and runs the command as the image's non-root user.
set -eu

# `-someflag` alone means "rabbitmq-server with this flag"
if [ "${1#-}" != "$1" ]; then
    set -- rabbitmq-server "$@"
fi

cookie="$HOME/.erlang.cookie"
if [ -n "${RABBITMQ_ERLANG_COOKIE:-}" ]; then
    printf '%s' "$RABBITMQ_ERLANG_COOKIE" > "$cookie"
fi
if [ -e "$cookie" ]; then
    chmod 600 "$cookie" 2>/dev/null || :
fi

exec "$@"
