"""Bytes per tracked client, and the cap under a flood of distinct source addresses.

`python -m bench.client_memory [--clients N] [--flood M]`: fills the client store with N
distinct IPv4 clients and reports traced bytes per client (tracemalloc: every allocation the
store made, its preallocated arrays included); then pours M distinct addresses into a store of
capacity N and reports its size and the time per key.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from proxy.state import ClientStore


def address(i: int) -> str:
    return f"{10 + (i >> 24 & 63)}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def bytes_per_client(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = ClientStore(n)
    for i in range(n):
        store.row("i:" + address(i), float(i))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del store
    return used / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--flood", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.clients
    b = bytes_per_client(n)
    print(f"client store (behaviour and robots.txt state): {b:.0f} bytes per client "
          f"({n:,} clients)")
    store = ClientStore(n)
    started = time.perf_counter()
    for i in range(args.flood):
        store.row("i:" + address(i), float(i))
    took = time.perf_counter() - started
    print(f"flood: {args.flood:,} distinct addresses into capacity {n:,}: size {len(store):,}, "
          f"evictions {store.evictions:,}, {took / args.flood * 1e6:.2f} us per new key")


if __name__ == "__main__":
    main()
