"""A SIGTERM'd service always exits, and soon.

The lifecycle integration test sends SIGTERM the moment it reads ``batch.committed``,
i.e. while the service is still inside structlog's write of that line. The signal handler
used to log too: structlog's lock is not reentrant, so the process deadlocked for good
(about one run in four on a 2-core machine).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.integration.service_runner import ROOT

# Logs one line through the service's logging set-up, with a stream that delivers SIGTERM
# to the process in the middle of the write, i.e. while structlog holds its lock.
_SIGNAL_DURING_A_LOG_WRITE = textwrap.dedent(
    """
    import os, signal, structlog
    from stream.logs import configure_logging
    from stream.service import stop_on_signals

    class SignalsWhileWriting:
        def __init__(self):
            self.lines = []
        def write(self, data):
            if not self.lines:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before write returns
            self.lines.append(data)
            return len(data)
        def flush(self):
            pass

    out = SignalsWhileWriting()
    configure_logging("info", stream=out)
    stopped = []
    stop_on_signals(stopped.append)
    structlog.get_logger("test").info("batch.committed", batch=1)
    assert stopped == ["SIGTERM"], stopped
    assert len(out.lines) == 1, out.lines
    print("ok")
    """
)


def test_a_signal_arriving_during_a_log_write_does_not_deadlock():
    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_A_LOG_WRITE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,  # a deadlock: TimeoutExpired fails the test instead of hanging it
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
