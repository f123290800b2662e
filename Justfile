# Developer entry points. Every recipe that needs the package runs `setup` first (idempotent).
set shell := ["bash", "-euo", "pipefail", "-c"]

default:
    @just --list

# Install system packages, mount tracefs, install this package (editable) with dev tools.
setup:
    bash scripts/setup.sh

# Run the main job end to end on embedded defaults, in a temporary workspace.
demo: setup
    python3 -m stella_bundle demo

# (In one process per core, each test file whole in one of them, the longest files first
# (tests/conftest.py, tests/file_seconds.json): `just test -n 0` for one process.)
# The whole test suite (pytest exit 5, "no tests ran", is a failure).
test *ARGS: setup
    python3 -m pytest -n auto --dist loadfile --no-loadscope-reorder {{ARGS}} || { rc=$?; if [ $rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $rc; }

# (`just test` runs everything, and so does CI; hypothesis takes its "dev" profile unless CI=true.)
# The suite without the tests marked `slow` (each several seconds: real agents, servers, clones).
test-quick *ARGS: setup
    python3 -m pytest -n auto --dist loadfile --no-loadscope-reorder -m "not slow" {{ARGS}} || { rc=$?; if [ $rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi; exit $rc; }

# The fuzz targets alone (tests/fuzz); STELLA_FUZZ_PROFILE=fuzz-long for a long run by hand.
fuzz *ARGS: setup
    python3 -m pytest tests/fuzz {{ARGS}}

# Lint and type-check.
lint: setup
    ruff check .
    ruff format --check .
    mypy

# Rebuild the precompiled CO-RE probe objects and probes/probes.lock.json.
probes: setup
    bash probes/build.sh

# Benchmarks: each prints its figures and ratios against a peer measured in the same run,
# then its own wall time and CPU seconds (of the processes it waited for: a loaded machine
# stretches the wall time, less the CPU); every bench's and the total at the end (issue 15:
# <= 10 min).
bench: setup
    #!/usr/bin/env bash
    set -euo pipefail
    micros() { local t=$EPOCHREALTIME; echo "${t//[.,]/}"; }
    times_file=$(mktemp)
    trap 'rm -f "$times_file"' EXIT
    # `times` must run in this shell (a subshell's children start at zero): CPU of the children so far.
    children_cpu() { tail -1 "$times_file" | sed 's/[ms]/ /g' | awk '{ printf "%.0f", $1 * 60 + $2 + $3 * 60 + $4 }'; }
    summary=()
    began=$(micros)
    # The API's latency first: bench/agent.py detaches 2,000 uprobes and the kernel's RCU
    # reclaim after it kept the load average at 12-22 into the next bench (2026-12-03).
    benches=(bench/api.py)
    for b in bench/*.py; do [ "$b" = bench/api.py ] || benches+=("$b"); done
    for b in "${benches[@]}"; do
      echo "== $b (load average $(cut -d' ' -f1-3 /proc/loadavg))"
      start=$(micros)
      times > "$times_file"; cpu_before=$(children_cpu)
      python3 "$b"
      took=$((($(micros) - start + 500000) / 1000000))
      times > "$times_file"; cpu=$(($(children_cpu) - cpu_before))
      echo "== $b: $took s (CPU $cpu s)"
      summary+=("$(printf '%6d s  CPU %5d s  %s' "$took" "$cpu" "$b")")
    done
    printf '%s\n' "${summary[@]}"
    times > "$times_file"
    total=$((($(micros) - began + 500000) / 1000000))
    verdict=$([ "$total" -le 600 ] && echo met || echo "NOT met")
    echo "just bench: $total s in all, CPU $(children_cpu) s (load average at the end $(cut -d' ' -f1-3 /proc/loadavg)); target <= 600 s on a quiet machine: $verdict"

# Regenerate schemas/openapi.json from the API (a test keeps them equal).
openapi: setup
    python3 -m stella_bundle.api.openapi schemas/openapi.json
