"""DSSE sign+verify throughput of our attest layer against a bare `cryptography` ed25519 peer.

"ours, in memory": sign (PAE, securesystemslib CryptoSigner) and verify (keyid-agnostic, with
threshold) a DSSE envelope. "ours, envelope on wire": the same, plus the canonical JSON that
`attest sign` writes (base64) and its strict parse back (JSON, base64, shape). The peer signs
and verifies the same payload bytes with `cryptography` directly, in the same run. Target
(issue 2): ours costs at most 1.5x the bare signature on 1 MiB payloads. Always exits 0: the
figures are the result (`just bench` runs every benchmark).

Usage: python bench/attest.py [--seconds S] [--sizes 1024,1048576]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer import CryptoSigner

from stella_bundle.attest.dsse import envelope_bytes, read_envelope, sign_payload, verify_envelope

PAYLOAD_TYPE = "application/vnd.in-toto+json"
TARGET_RATIO_1MIB = 1.5


def best_rates(operations: dict[str, Callable[[], None]], seconds: float) -> dict[str, float]:
    """Operations per second of each, measured in interleaved rounds, best round kept.

    Interleaving and best-of damp the noise of a machine shared with other work: a burst of
    load hits ours and the peer alike instead of whichever happened to run at that moment.
    Each round starts with one untimed call, so a round measures the steady state rather than
    the allocator re-growing its heap after the previous measure shrank it.
    """
    for operation in operations.values():
        operation()  # warm-up
    rounds = 15
    best = dict.fromkeys(operations, 0.0)
    for _ in range(rounds):
        for name, operation in operations.items():
            operation()  # untimed: the allocator settles after the other measures ran
            count = 0
            start = time.thread_time()
            deadline = start + seconds / rounds / len(operations)
            while True:
                operation()
                count += 1
                now = time.thread_time()
                if now >= deadline:
                    break
            best[name] = max(best[name], count / (now - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--sizes", default="1024,1048576", help="payload sizes in bytes")
    args = parser.parse_args()

    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key()
    signer = CryptoSigner(private)
    trusted = [signer.public_key]

    print(f"{'payload':>9}  {'measure':<22} {'ops/s':>9}  {'ratio to bare':>13}  target")
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

        rates = best_rates(
            {
                "ours, envelope on wire": wire,
                "ours, in memory": in_memory,
                "bare cryptography": bare,
            },
            args.seconds * 3,
        )
        label = f"{size // 1024} KiB" if size < 1 << 20 else f"{size // (1 << 20)} MiB"
        for name, rate in rates.items():
            ratio = rates["bare cryptography"] / rate  # how many times longer one of ours takes
            target = ""
            if size >= 1 << 20 and name.startswith("ours"):
                met = ratio <= TARGET_RATIO_1MIB
                target = f"<= {TARGET_RATIO_1MIB}: {'met' if met else 'MISSED'}"
            print(f"{label:>9}  {name:<22} {rate:>9.1f}  {ratio:>12.2f}x  {target}")
    print(
        "note: times are this thread's CPU time (the machine is shared). The wire measure adds "
        "the canonical JSON and strict base64 of the envelope both ways (read_envelope: the "
        "payload decoded in place, the rest through the duplicate-refusing JSON reader); what "
        "remains over the bare signature is mostly the page faults of the MiB-sized short-lived "
        "buffers (the decoded payload, the PAE to verify), which glibc hands back to the OS "
        "after each operation."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
