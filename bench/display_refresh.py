"""Cost of one refresh of the live progress display (rich), drawn on a real pseudo-terminal.

A `LiveDisplay` on the slave side of a pty 80 columns wide is updated N times with a busy
`Progress` (errors of several types, a wait); a thread drains the master side so writes
never block. Reports CPU and wall time per refresh (the display refreshes once a second,
so this is the share of one core it costs) and the import time of rich. Prints figures.
"""

from __future__ import annotations

import fcntl
import os
import pty
import statistics
import struct
import sys
import termios
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REFRESHES = 2000
COLUMNS = 80


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def main() -> dict[str, float]:
    started = time.perf_counter()
    import rich.console
    import rich.live  # noqa: F401

    import_s = time.perf_counter() - started
    from batchrunner.display import LiveDisplay
    from batchrunner.progress import Progress
    from batchrunner.spec import PricingSpec

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    threading.Thread(target=_drain, args=(master,), daemon=True).start()
    stream = os.fdopen(slave, "w", encoding="utf-8", closefd=True)
    p = Progress(total=1_000_000, done_before=12_345, started=time.monotonic() - 60)
    p.errors = {"rate_limit_error": 120, "timeout": 7, "invalid_request_error": 3}
    p.waiting = "12 s for HTTP 429 retry-after: 12"
    display = LiveDisplay(stream, pricing=PricingSpec(input_per_mtok=3, output_per_mtok=15))
    cpu, wall = [], []
    for i in range(REFRESHES):
        p.succeeded, p.attempts, p.input_tokens, p.output_tokens = i * 50, i * 52, i * 900, i * 70
        c0, w0 = time.process_time(), time.perf_counter()
        display.update(p)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    display.close()
    stream.close()
    os.close(master)
    return {
        "cpu_ms_median": statistics.median(cpu) * 1000,
        "wall_ms_median": statistics.median(wall) * 1000,
        "wall_ms_p99": sorted(wall)[int(0.99 * len(wall))] * 1000,
        "rich_import_ms": import_s * 1000,
    }


def summary(res: dict[str, float]) -> str:
    return (
        f"display-refresh: {res['cpu_ms_median']:.2f} ms CPU per refresh (median; wall "
        f"{res['wall_ms_median']:.2f} ms, p99 {res['wall_ms_p99']:.2f} ms) at {COLUMNS} "
        f"columns, once a second; rich imports {res['rich_import_ms']:.0f} ms"
    )


if __name__ == "__main__":
    print(summary(main()))
