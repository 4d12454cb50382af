"""Run one command and report its wall time, CPU time (user + system) and its own peak RSS, as JSON on stdout.

    python -S -I bench/_spawn.py TIMEOUT ARGV...

Why a separate small process: on Linux a child's ru_maxrss starts from the
RSS high-water mark of the process it was forked from (exec keeps it), so a
benchmark driver that has grown to hundreds of MB would inflate every child
it starts. This launcher stays at about 9 MB, so what it reports is the
measured command's own peak (with a floor of the launcher's size). The
command's stdout goes to /dev/null, its stderr is inherited; it runs in its
own session, and on timeout that session is killed.
"""

import json
import os
import signal
import sys
import time


def main() -> None:
    timeout = float(sys.argv[1])
    argv = sys.argv[2:]
    timed_out = False
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(2, f"cannot run {argv[0]}: {exc}\n".encode())
        os._exit(127)

    def on_alarm(signum, frame):
        nonlocal timed_out
        timed_out = True
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    signal.setitimer(signal.ITIMER_REAL, 0)
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
               "returncode": os.waitstatus_to_exitcode(status),
               "timed_out": timed_out}, sys.stdout)


if __name__ == "__main__":
    main()
