"""Start a command at an instant of CLOCK_MONOTONIC: the flows of a test share one clock.

Run as ``python3 -I -S startat.py DEADLINE_NS -- ARGV...`` (standard library only, so it starts
in a few ms without the package): it is spawned well before its instant, sleeps until
``DEADLINE_NS`` (CLOCK_MONOTONIC is one clock for every network namespace), writes
``mptcplab-start <ns>`` -- the instant it really went -- as the first line on stderr, and
replaces itself with ARGV (same PID, so the run's registry and stop-by-PID still hold). Spawning
a process costs milliseconds on a busy machine; sleeping to a deadline costs tens of
microseconds, so offsets of concurrent flows are honoured to well under the 10 ms budget.
"""

import os
import sys
import time

MARK = "mptcplab-start"


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--" or not argv[1].isdigit():
        sys.stderr.write("usage: startat.py DEADLINE_NS -- ARGV...\n")
        return 2
    deadline = int(argv[1])
    while True:
        left = deadline - time.monotonic_ns()
        if left <= 0:
            break
        time.sleep(max(left - 100_000, 0) / 1e9)  # wake 0.1 ms early, then at most a short spin
    os.write(2, f"{MARK} {time.monotonic_ns()}\n".encode())
    os.execvp(argv[3], argv[3:])
    return 127  # not reached: execvp raises on failure


if __name__ == "__main__":
    sys.exit(main(sys.argv))
