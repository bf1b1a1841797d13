#!/usr/bin/env bash
# Before `make up`: is there a Docker Engine with Compose v2, and does it have the memory the stack
# needs? One clear line per problem, before a 10-minute image build. The memory floor is
# docker-compose.yaml's FRUITS_STACK_MIN_MEMORY_GB default (airflow-init checks it again inside).
#   usage: scripts/docker_check.sh "<compose command>"   (make up passes $(COMPOSE))
set -euo pipefail
compose=${1:-docker compose}
cd "$(dirname "$0")/.."
if ! command -v docker >/dev/null; then
  echo "error: docker not found. The local stack needs Docker Engine or Docker Desktop, with Compose v2 (docs/local-stack.md)." >&2
  exit 1
fi
if ! info=$(docker info --format '{{.MemTotal}} {{.NCPU}}' 2>&1); then
  echo "error: the Docker daemon does not answer (docker info: ${info##*$'\n'})." >&2
  echo "       Start Docker Desktop, or the docker service; on Linux your user must be in the docker group." >&2
  exit 1
fi
if ! $compose version >/dev/null 2>&1; then
  echo "error: '$compose version' failed: install the Docker Compose v2 plugin (or make up COMPOSE='docker-compose')." >&2
  exit 1
fi
need_gb=${FRUITS_STACK_MIN_MEMORY_GB:-$(sed -n 's/.*FRUITS_STACK_MIN_MEMORY_GB:-\([0-9]*\)}.*/\1/p' docker-compose.yaml)}
read -r memory cpus <<< "$info"
if [ "$memory" -lt $(( need_gb * 1024 * 1024 * 1024 )) ]; then
  echo "error: Docker has $(( memory / 1024 / 1024 )) MiB of memory; the stack needs at least ${need_gb} GiB" \
       "(Spark and TensorFlow run in the scheduler container)." >&2
  echo "       Docker Desktop: Settings > Resources > Memory. Then make up again." >&2
  exit 1
fi
echo "docker: $(( memory / 1024 / 1024 / 1024 )) GiB of memory, ${cpus} CPUs (the stack needs ${need_gb} GiB)"
