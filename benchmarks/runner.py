"""How a benchmark's main() ends, once: its exit status, its cleanup, its report and its --json.

Every benchmark ends the same way, and each used to spell it out: Ctrl-C or SIGTERM stops the run
but still ends the processes it started; a broken setup prints ``NAME: FAILED: why`` and exits 1
with no report (a number from a broken run must not be read); an interrupt prints
``NAME: interrupted`` and exits 130; only a finished run prints its report and writes --json.
What differs between the scripts (the measurement, the report, what to clean up, which
exceptions mean "broken") is a parameter.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from processes import BenchError

R = TypeVar("R")


def run_bench(
    name: str,
    measure: Callable[[], R],
    report: Callable[[R], int | None],
    *,
    cleanup: Callable[[], None] | None = None,
    failures: tuple[type[Exception], ...] = (BenchError,),
) -> int:
    """Run ``measure``, then ``cleanup`` whatever happened, then ``report`` if it finished.

    Returns the exit status: 1 after one of ``failures``, 130 after an interrupt, else what
    ``report`` returns (None counts as 0). ``report`` prints the report and writes the --json.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: the cleanup runs
    try:
        result = measure()
    except failures as exc:
        print(f"{name}: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        if cleanup is not None:
            cleanup()
    return report(result) or 0


def write_json(path: Path | None, document: object, **options) -> None:
    """Write ``document`` to ``path`` (the --json option; None: not asked for), indented."""
    if path is not None:
        path.write_text(json.dumps(document, indent=2, **options) + "\n")


def say(text: str) -> None:
    """Progress for the person watching, on stderr: stdout is the report."""
    print(text, file=sys.stderr, flush=True)
