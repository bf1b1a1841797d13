"""Real Airflow processes for the UI tests: Postgres in a temp folder, `airflow db migrate`, then the
api-server, scheduler (LocalExecutor), dag-processor and triggerer, all on free local ports.

Everything is started as a child of the test and stopped (process group by process group) when the
`with` block ends, also on failure; the temp folders go with it.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support import REPO_ROOT
from tests.support.moto import free_port

CHROMIUM = os.environ.get("FRUITS_CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT = 180  # seconds for a process to become ready
PROCESSES = ("scheduler", "dag-processor", "triggerer")


class StackError(RuntimeError):
    """A process of the test stack did not start; the message holds the end of its log."""


def postgres_bin() -> Path:
    """Folder of Debian's PostgreSQL server binaries (newest installed), or FRUITS_PG_BIN."""
    if os.environ.get("FRUITS_PG_BIN"):
        return Path(os.environ["FRUITS_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise StackError("PostgreSQL server not found: apt-get install postgresql (or run make setup as root).")
    return Path(found[-1]).parent


def require_chromium() -> str:
    if not Path(CHROMIUM).is_file():
        raise StackError(f"{CHROMIUM} not found: apt-get install chromium (or run make setup as root).")
    return CHROMIUM


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _wait_until(ready, what: str, log: Path, process: subprocess.Popen | None = None,
                expected: tuple[type[Exception], ...] = (requests.RequestException, OSError)) -> None:
    """Call ready() every second until it is true; a failure of the kinds `expected` means "not yet"."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what} exited with {process.returncode}:\n{tail(log)}")
        try:
            if ready():
                return
        except expected:
            pass
        time.sleep(1)
    raise StackError(f"{what} not ready after {START_TIMEOUT} s:\n{tail(log)}")


@contextmanager
def _process(command: list[str], log: Path, env: Mapping[str, str] | None = None, user: str | None = None,
             cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """A child process in its own process group, output to log; the group is stopped afterwards."""
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=dict(env or os.environ),
                                   user=user, cwd=cwd, start_new_session=True)
    try:
        yield process
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # children left in the group (LocalExecutor workers, spark-submit's JVM)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def running_postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster (initdb into a temp folder, trust auth, a free port on
    127.0.0.1) with a database `airflow`; yields its SQLAlchemy URL. The server refuses to run as
    root, so under root it runs as the `postgres` system user."""
    import psycopg2

    binaries = postgres_bin()
    user = _server_user() if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="fruits-pg-"))
    data, log = root / "data", root / "postgres.log"
    if user:
        account = pwd.getpwnam(user)
        os.chown(root, account.pw_uid, account.pw_gid)
    port = free_port()
    try:
        subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, user=user, cwd=root)
        server = [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                  "-k", str(root), "-c", "fsync=off", "-c", "max_connections=200"]
        with _process(server, log, user=user, cwd=root) as process:
            url = f"postgresql+psycopg2://airflow@127.0.0.1:{port}"
            _wait_until(lambda: _create_database(port), "PostgreSQL", log, process, expected=(psycopg2.OperationalError,))
            yield f"{url}/airflow"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _server_user() -> str:
    """The account PostgreSQL runs as under root: Debian's `postgres`, else `nobody`."""
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        return "nobody"


def _create_database(port: int) -> bool:
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname="postgres", connect_timeout=3)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
            if cursor.fetchone() is None:
                cursor.execute("CREATE DATABASE airflow")
    finally:
        connection.close()
    return True


@dataclass
class Airflow:
    """The running stack: where its API is, who may log in, where its files and logs are."""

    url: str
    username: str
    password: str
    home: Path
    env: dict[str, str]

    def api(self) -> AirflowApi:
        return AirflowApi(self.url, self.username, self.password)

    def logs(self) -> str:
        """The end of every process log and of every task log, for a failure message."""
        parts = [f"--- {path.name}\n{tail(path, 40)}" for path in sorted(self.home.glob("*.log"))]
        for path in sorted((self.home / "logs").rglob("*.log"))[-12:]:
            parts.append(f"--- {path.relative_to(self.home)}\n{tail(path, 40)}")
        return "\n".join(parts)


class AirflowApi:
    """The REST API (v2) with a token from the simple auth manager."""

    def __init__(self, url: str, username: str, password: str):
        self.url = url
        self.session = requests.Session()
        response = self.session.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)
        response.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def get(self, path: str, **params) -> dict:
        response = self.session.get(f"{self.url}/api/v2/{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def patch(self, path: str, body: dict) -> dict:
        response = self.session.patch(f"{self.url}/api/v2/{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> dict:
        response = self.session.post(f"{self.url}/api/v2/{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def wait_for(self, find, timeout: float):
        """Poll find() every 2 s until it returns something truthy; fail after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not (found := find()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing found after {timeout} s by {find}")
            time.sleep(2)
        return found

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """Poll a DAG run until it ends; returns it with its task instance states."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(f"dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed") or time.monotonic() > deadline:
                tasks = self.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
                run["tasks"] = {ti["task_id"]: ti["state"] for ti in tasks}
                return run
            time.sleep(3)


def airflow_env(home: Path, db_url: str, api_port: int, extra: Mapping[str, str]) -> dict[str, str]:
    url = f"http://127.0.0.1:{api_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "FRUITS_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "fruits-ui-test-only-jwt-secret",
            "AIRFLOW__API__SECRET_KEY": "fruits-ui-test-only-secret-key",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": str(REPO_ROOT),
            "FRUITS_REPO_ROOT": str(REPO_ROOT),
        }
    )
    env.update(extra)
    return env


@contextmanager
def running_airflow(extra_env: Mapping[str, str], password: str = "fruits-ui-test") -> Iterator[Airflow]:
    """Postgres, then `airflow db migrate`, then the four Airflow processes; yields the stack once the
    API answers and the DAG is parsed. extra_env: FRUITS_* settings, AWS connection and credentials."""
    home = Path(tempfile.mkdtemp(prefix="fruits-airflow-ui-"))
    try:
        with ExitStack() as stack:
            db_url = stack.enter_context(running_postgres())
            port = free_port()
            env = airflow_env(home, db_url, port, extra_env)
            (home / "passwords.json").write_text(json.dumps({"admin": password}))
            migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=home,
                                     capture_output=True, text=True)
            if migrate.returncode != 0:
                raise StackError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
            api_log = home / "api-server.log"
            api = stack.enter_context(_process(
                [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1"], api_log, env, cwd=home))
            for name in PROCESSES:
                stack.enter_context(_process([sys.executable, "-m", "airflow", name], home / f"{name}.log", env, cwd=home))
            airflow = Airflow(f"http://127.0.0.1:{port}", "admin", password, home, env)
            _wait_until(lambda: requests.get(f"{airflow.url}/api/v2/monitor/health", timeout=5).ok,
                        "airflow api-server", api_log, api)
            yield airflow
    finally:
        shutil.rmtree(home, ignore_errors=True)


def wait_for_dag(airflow: Airflow, dag_id: str) -> AirflowApi:
    """Wait until the dag-processor has stored the DAG; returns a logged-in API client."""
    api = airflow.api()
    _wait_until(lambda: api.session.get(f"{airflow.url}/api/v2/dags/{dag_id}", timeout=10).ok,
                f"DAG {dag_id} (dag-processor)", airflow.home / "dag-processor.log")
    errors = api.get("importErrors")["import_errors"]
    if errors:
        raise StackError(f"DAG import errors: {errors}")
    return api
