"""DSSE sign+verify throughput of our attest layer against a bare `cryptography` ed25519 peer.

"ours, in memory": sign (PAE, securesystemslib CryptoSigner) and verify (keyid-agnostic, with
threshold) a DSSE envelope. "ours, envelope on wire": the same, plus the canonical JSON that
`attest sign` writes (base64) and its strict parse back (JSON, base64, shape). The peer signs
and verifies the same payload bytes with `cryptography` directly, in the same run. Target
(issue 2): ours costs at most 1.5x the bare signature on 1 MiB payloads. Always exits 0: the
figures are the result (`just bench` runs every benchmark).

glibc's allocator is pinned for each measure (mallopt), because left to itself its dynamic
mmap threshold makes a loop of MiB-sized operations bistable: depending on what else the
process allocated before (imports included), the same code either reuses heap pages or gets
fresh ones (~640 page faults per 1 MiB round trip, ~1 ms) on every operation, and the wire
figure flipped between ~1.12x and ~1.32x from run to run and from one commit to the next
with no change in the attest code. "ours" rows run with the pages kept (thresholds raised: the
code's own cost); "wire, fresh pages" with every MiB buffer mapped anew (glibc's default
128 KiB mmap threshold held fixed: what a one-shot `attest sign`/`verify` process pays).
Page faults per operation are printed beside each row.

Usage: python bench/attest.py [--seconds S] [--sizes 1024,1048576]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer import CryptoSigner

from stella_bundle.attest.dsse import envelope_bytes, read_envelope, sign_payload, verify_envelope

PAYLOAD_TYPE = "application/vnd.in-toto+json"
TARGET_RATIO_1MIB = 1.5

# glibc's mallopt parameters (malloc.h). Setting either fixes it (no dynamic adjustment).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}  # MiB buffers reuse the heap
FRESH = {M_MMAP_THRESHOLD: 128 << 10, M_TRIM_THRESHOLD: 128 << 10}  # each one mapped anew


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").mallopt  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None  # not glibc: the allocator as it is


MALLOPT = _mallopt()
# The rows; "fresh pages" shows what the allocator can add on top of them.
TARGETED = ("ours, envelope on wire", "ours, in memory")


def pinned(settings: dict[int, int], operation: Callable[[], None]) -> Callable[[], None]:
    """`operation`, with the allocator set to `settings` first (called before each measure)."""

    def setup() -> None:
        if MALLOPT is not None:
            for parameter, value in settings.items():
                MALLOPT(parameter, value)
        operation()

    return setup


def best_rates(
    operations: dict[str, tuple[Callable[[], None], Callable[[], None]]], seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Operations per second of each (setup, operation), measured in interleaved rounds, best
    round kept; and the page faults per operation over all rounds.

    Interleaving and best-of damp the noise of a machine shared with other work: a burst of
    load hits ours and the peer alike instead of whichever happened to run at that moment.
    Each round starts with one untimed call, so a round measures the steady state rather than
    the allocator re-growing its heap after the previous measure shrank it.
    """
    for setup, _ in operations.values():
        setup()  # warm-up
    rounds = 15
    best = dict.fromkeys(operations, 0.0)
    faults = dict.fromkeys(operations, 0)
    calls = dict.fromkeys(operations, 0)
    for _ in range(rounds):
        for name, (setup, operation) in operations.items():
            setup()  # untimed: the allocator set and settled after the other measures ran
            count = 0
            faulted = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            start = time.thread_time()
            deadline = start + seconds / rounds / len(operations)
            while True:
                operation()
                count += 1
                now = time.thread_time()
                if now >= deadline:
                    break
            faults[name] += resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faulted
            calls[name] += count
            best[name] = max(best[name], count / (now - start))
    return best, {name: faults[name] / calls[name] for name in operations}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--sizes", default="1024,1048576", help="payload sizes in bytes")
    args = parser.parse_args()

    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key()
    signer = CryptoSigner(private)
    trusted = [signer.public_key]

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'payload':>9}  {'measure':<26} {'ops/s':>9}  {'ratio to bare':>13}  "
        f"{'faults/op':>9}  target"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        payload = os.urandom(size)

        def wire(payload: bytes = payload) -> None:
            envelope = sign_payload(payload, PAYLOAD_TYPE, [signer])
            received = read_envelope(envelope_bytes(envelope))  # the file bytes, strictly read
            verify_envelope(received, trusted, threshold=1)

        def in_memory(payload: bytes = payload) -> None:
            verify_envelope(sign_payload(payload, PAYLOAD_TYPE, [signer]), trusted, threshold=1)

        def bare(payload: bytes = payload) -> None:
            public.verify(private.sign(payload), payload)

        rates, faults = best_rates(
            {
                "ours, envelope on wire": (pinned(KEPT, wire), wire),
                "ours, wire, fresh pages": (pinned(FRESH, wire), wire),
                "ours, in memory": (pinned(KEPT, in_memory), in_memory),
                "bare cryptography": (pinned(KEPT, bare), bare),
            },
            args.seconds * 3,
        )
        label = f"{size // 1024} KiB" if size < 1 << 20 else f"{size // (1 << 20)} MiB"
        for name, rate in rates.items():
            ratio = rates["bare cryptography"] / rate  # how many times longer one of ours takes
            target = ""
            if size >= 1 << 20 and name in TARGETED:
                met = ratio <= TARGET_RATIO_1MIB
                target = f"<= {TARGET_RATIO_1MIB}: {'met' if met else 'MISSED'}"
            print(
                f"{label:>9}  {name:<26} {rate:>9.1f}  {ratio:>12.2f}x  {faults[name]:>9.0f}  "
                f"{target}"
            )
    print(
        "note: times are this thread's CPU time (the machine is shared). The wire measure adds "
        "the canonical JSON and strict base64 of the envelope both ways (read_envelope: the "
        "payload decoded in place, the rest through the duplicate-refusing JSON reader). "
        "'fresh pages': the same with glibc mapping every MiB buffer anew (the envelope bytes, "
        "the decoded payload, the PAEs), as a one-shot process does; the other rows keep the "
        f"heap's pages{'' if MALLOPT else ' (not glibc here: the allocator left as it is)'}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
