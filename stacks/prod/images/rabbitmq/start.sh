#!/bin/sh
# Writes the Erlang cookie from the environment (the nodes of a cluster share it), then runs
# RabbitMQ in the foreground. The cookie never goes on a command line.
set -eu
umask 077
printf '%s' "$RABBITMQ_ERLANG_COOKIE" > /var/lib/rabbitmq/.erlang.cookie
unset RABBITMQ_ERLANG_COOKIE
exec rabbitmq-server
