#!/bin/bash
# Entrypoint of the local RabbitMQ stand-in (scripts/containers/bases.sh), doing what the
# official rabbitmq image's does with the same variables: RABBITMQ_DEFAULT_USER,
# RABBITMQ_DEFAULT_PASS (and RabbitMQ's own RABBITMQ_NODENAME, RABBITMQ_NODE_PORT, ...).
set -euo pipefail
: "${RABBITMQ_DEFAULT_USER:=guest}" "${RABBITMQ_DEFAULT_PASS:=guest}"

mkdir -p /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
default_user = $RABBITMQ_DEFAULT_USER
default_pass = $RABBITMQ_DEFAULT_PASS
# Clients connect from other containers, as in the official image.
loopback_users = none
CONF
chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
# Logs to the container's output; the Erlang cookie lives in HOME (the image sets it, so
# rabbitmq-diagnostics in a healthcheck finds the same one).
export RABBITMQ_LOGS=- HOME=/var/lib/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups rabbitmq-server
