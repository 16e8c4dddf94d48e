"""select with a timeout, a ticker and a deadline.

A producer sends readings at an uneven pace and pauses once for longer than the consumer is
willing to wait. The consumer's ``select`` waits on the data, an inactivity ``Timer`` (reset at
each reading, so heartbeats do not restart it), a heartbeat ``Ticker`` and an overall deadline
(``after``), and reports what it saw.

    python examples/select_timeout.py
"""

from __future__ import annotations

import csp_mp
from csp_mp import Chan, Ticker, Timer, after, go, select, sleep

PAUSES = [0.01, 0.03, 0.02, 0.25, 0.01, 0.02]  # before each reading; 0.25 s > TIMEOUT
TIMEOUT = 0.1
HEARTBEAT = 0.05
DEADLINE = 5.0


def producer(out: Chan) -> None:
    """Send one reading after each pause, then close."""
    for i, pause in enumerate(PAUSES):
        sleep(pause)
        out.send(i * 10)
    out.close()


def main() -> dict[str, int]:
    data: Chan = Chan()
    go(producer, data)
    heartbeat = Ticker(HEARTBEAT)
    quiet = Timer(TIMEOUT)  # fires when no reading came for TIMEOUT seconds
    deadline = after(DEADLINE)
    seen = {"values": 0, "timeouts": 0, "ticks": 0}
    try:
        while True:
            i, v = select(data.recv_ok, quiet.c.recv, heartbeat.c.recv, deadline.recv)
            if i == 0:
                value, ok = v
                if not ok:
                    print("producer closed the channel: done")
                    break
                seen["values"] += 1
                quiet.reset(TIMEOUT)
                print(f"got reading {value}")
            elif i == 1:
                seen["timeouts"] += 1
                quiet.reset(TIMEOUT)
                print(f"no reading for {TIMEOUT} s: timed out, waiting again")
            elif i == 2:
                seen["ticks"] += 1
            else:
                print(f"overall deadline of {DEADLINE} s reached: giving up")
                break
    finally:
        heartbeat.stop()
        quiet.stop()
    print(f"{seen['values']} readings, {seen['timeouts']} timeout(s), "
          f"{seen['ticks']} heartbeat tick(s) every {HEARTBEAT} s")
    return seen


if __name__ == "__main__":
    csp_mp.run(main)
