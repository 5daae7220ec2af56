"""What a UDP `sendto` on loopback costs the sender: to a receiver that runs, and one that sleeps.

A receiver process pinned to one CPU reads datagrams; the sender, pinned to another, sends
500-byte datagrams either back to back (the receiver stays busy) or 0.5 ms apart (it falls
asleep between them, and each datagram has the kernel wake it). Prints the average wall time
of a `sendto` in each case. On a virtual machine whose idle CPUs halt, waking one is a VM
exit that stalls the sender; see README.md "Figures on record".

    .venv/bin/python benchmarks/sip/sendto_wakeup.py
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

DATAGRAM = b"x" * 500


def receive(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", port))
        rx.settimeout(2)
        print("ready", flush=True)
        try:
            while True:
                rx.recv(2048)
        except TimeoutError:
            return


def average_send_us(port: int, count: int, gap_s: float) -> float:
    total = 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for _ in range(count):
            started = time.perf_counter()
            tx.sendto(DATAGRAM, ("127.0.0.1", port))
            total += time.perf_counter() - started
            until = time.perf_counter() + gap_s
            while time.perf_counter() < until:  # spin: the sender itself never sleeps
                pass
    return total / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.receive)
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("needs two CPUs: the receiver and the sender on different ones")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    receiver = subprocess.Popen(
        ["taskset", "-c", str(cpus[0]), sys.executable, __file__, "--receive", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        receiver.stdout.readline()
        os.sched_setaffinity(0, {cpus[1]})
        busy = average_send_us(port, args.count, 0.0)
        sleeping = average_send_us(port, args.count, 0.0005)
    finally:
        receiver.wait(10)
    print(f"sendto, receiver running:  {busy:6.1f} µs")
    print(f"sendto, receiver sleeping: {sleeping:6.1f} µs  (datagrams 0.5 ms apart)")


if __name__ == "__main__":
    main()
