#!/usr/bin/env bash
# Entrypoint of the stack's Airflow image (docker/Dockerfile, built on a plain Python image, so this
# takes the place of apache/airflow's). `init` prepares the stack once (the airflow-init service);
# any other command is an airflow subcommand (`scheduler`, `api-server`, ...) or, when it names a
# program on PATH (`bash`, `python`, `airflow`), runs as given.
set -euo pipefail

# Compose runs the containers as AIRFLOW_UID (your user id on Linux), which the image does not know:
# give it a passwd entry, as Airflow's image does, because getpass, Java and Hadoop look the user up.
if ! whoami >/dev/null 2>&1 && [ -w /etc/passwd ]; then
  echo "fruits:x:$(id -u):0:AIRFLOW_UID:/home/airflow:/bin/bash" >> /etc/passwd
fi
if [ "${HOME:-/}" = / ]; then
  export HOME=/home/airflow
fi

# The UI login of SimpleAuthManager (AIRFLOW_ADMIN_USERNAME / AIRFLOW_ADMIN_PASSWORD, set for the
# api-server only): written to its password file, so the login is the one in .env instead of a
# generated password printed in the logs.
if [ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]; then
  python - <<'PY'
import json, os
with open(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"], "w") as handle:
    json.dump({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, handle)
PY
fi

# Bytes of memory this container may use: its cgroup's limit (v2 or v1) when one is set, else the
# machine's (Docker Desktop: its VM's).
memory_bytes() {
  local total limit
  total=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024 ))
  for file in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [ -r "$file" ]; then
      limit=$(cat "$file")
      if [ "$limit" != max ] && [ "$limit" -lt "$total" ]; then
        total=$limit
      fi
      break
    fi
  done
  echo "$total"
}

# The resources the stack needs, checked once before anything starts: the local compute mode runs
# Spark and TensorFlow inside the scheduler container (docs/local-stack.md#memory).
check_resources() {
  local need_gb=${FRUITS_STACK_MIN_MEMORY_GB:-6} have cpus
  have=$(memory_bytes)
  if [ "$have" -lt $(( need_gb * 1024 * 1024 * 1024 )) ]; then
    echo "airflow-init: Docker gives this stack $(( have / 1024 / 1024 )) MiB of memory; it needs at least" \
         "${need_gb} GiB (Spark and TensorFlow run in the scheduler container)." >&2
    echo "airflow-init: give Docker more memory (Docker Desktop: Settings > Resources > Memory), then make up." >&2
    exit 1
  fi
  cpus=$(nproc)
  if [ "$cpus" -lt 2 ]; then
    echo "airflow-init: warning: Docker gives this stack ${cpus} CPU; runs will be slow (2 or more recommended)." >&2
  fi
  echo "airflow-init: $(( have / 1024 / 1024 )) MiB of memory and ${cpus} CPUs for the stack (needs ${need_gb} GiB)"
}

# airflow-init (runs as root): check the resources, migrate the metadata DB (a failure fails this
# service and with it every service that waits for it), then hand the logs volume to AIRFLOW_UID.
init() {
  check_resources
  airflow db migrate
  mkdir -p "${AIRFLOW_HOME}/logs"
  chown -R "${AIRFLOW_UID:-50000}:0" "${AIRFLOW_HOME}/logs"
  echo "airflow-init: metadata DB migrated (Airflow $(python -c 'import airflow; print(airflow.__version__)'))"
}

if [ "${1:-}" = init ]; then
  init
elif [ $# -gt 0 ] && command -v -- "$1" >/dev/null 2>&1; then
  exec "$@"
else
  exec airflow "$@"
fi
