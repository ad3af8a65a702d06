#!/bin/sh
# The official redis image's entry-point contract, for Debian's Redis 7.
set -eu

# `--option ...` or `something.conf` alone mean "redis-server with these"
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

# The official image builds Redis with protected mode off (a container's port is only
# reachable as its network allows); Debian's default is on, so turn it off here. It goes
# first (after a config file, which must be the first argument), so the chart's own
# `--protected-mode yes` still wins.
if [ "$1" = redis-server ]; then
    shift
    if [ $# -gt 0 ] && [ "${1%.conf}" != "$1" ]; then
        config=$1
        shift
        set -- redis-server "$config" --protected-mode no "$@"
    else
        set -- redis-server --protected-mode no "$@"
    fi
fi

exec "$@"
