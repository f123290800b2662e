"""Every attach type detected by a trial load and attach, never from kernel config; the fallback
chain of the kernel categories walked on this kernel by forcing types unavailable in turn."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stella_bundle.collector.features import KERNEL_ORDER, KernelFeatures, detect
from stella_bundle.collector.plan import category_programs
from stella_bundle.collector.trial import ATTACH_TYPES, DISABLE_ENV, lockdown_mode, meaning_of

KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe").exists()


@pytest.mark.ebpf
def test_every_attach_type_is_tried_and_reported(ebpf: None, features: KernelFeatures) -> None:
    assert list(features.attach_types) == list(ATTACH_TYPES)
    for name in ("uprobe", "uretprobe", "usdt", "tracepoint", "raw_tracepoint", "tp_btf"):
        trial = features.attach_types[name]
        assert trial.available and trial.stage == "attached", trial
    assert features.has("kprobe") == KPROBE_PMU
    if not KPROBE_PMU:
        kprobe = features.attach_types["kprobe"]
        assert kprobe.stage == "attach" and kprobe.errno == errno.ENOENT
        assert "without kprobes" in kprobe.meaning


@pytest.mark.ebpf
def test_fentry_is_refused_here_with_the_errno_and_its_meaning(
    ebpf: None, features: KernelFeatures
) -> None:
    # This machine: BTF and ftrace direct calls are built in, yet the kernel is locked down
    # (integrity) and refuses the fentry program at load. Config alone would say "yes".
    if lockdown_mode() not in ("integrity", "confidentiality"):
        # Another kernel: whatever it answered, the answer is evidence (attached or an errno).
        for name in ("fentry", "fexit"):
            trial = features.attach_types[name]
            assert trial.available or (trial.errno and trial.stage in ("load", "attach"))
        return
    assert "locked down (integrity)" in features.features["lockdown"].detail
    for name in ("fentry", "fexit"):
        trial = features.attach_types[name]
        assert not trial.available
        assert (trial.stage, trial.errno, trial.errno_name) == ("load", errno.EPERM, "EPERM")
        assert "kernel lockdown (integrity) refuses BPF tracing programs" in trial.meaning
        assert trial.evidence().startswith("EPERM at load: kernel lockdown")


def test_errno_meanings() -> None:
    assert "kernel lockdown (integrity)" in meaning_of("fentry", "load", errno.EPERM, "integrity")
    assert "lockdown mode unknown" in meaning_of("fentry", "load", errno.EPERM, None)
    assert "CAP_BPF" in meaning_of("uprobe", "load", errno.EPERM, "none")
    assert "too old" in meaning_of("tp_btf", "load", errno.EINVAL, "none")


def _walk(category: str, base: KernelFeatures) -> list[str | None]:
    """Force the chosen type unavailable, again and again, until nothing is left."""
    programs = category_programs()[category]
    disabled: set[str] = set()
    chosen: list[str | None] = []
    while True:
        detected = detect(disable=disabled)
        for name in disabled:
            assert detected.attach_types[name].stage == "disabled"
            assert DISABLE_ENV in detected.attach_types[name].meaning
        choice = detected.choose(category, programs)
        expected = next(
            (t for t in KERNEL_ORDER if t in programs and t not in disabled and base.has(t)),
            None,
        )
        assert choice.attach_type == expected, choice
        chosen.append(choice.attach_type)
        if choice.attach_type is None:
            assert "no attach type can reach it" in choice.reason
            return chosen
        disabled.add(choice.attach_type)


@pytest.mark.ebpf
def test_forcing_each_type_unavailable_walks_the_fallback_chain(
    ebpf: None, features: KernelFeatures
) -> None:
    for category in ("file", "net", "exec"):
        chosen = _walk(category, features)
        assert chosen[-1] is None and len(chosen) >= 2
        available = [t for t in KERNEL_ORDER if features.has(t)]
        assert chosen[:-1] == [t for t in available if t in category_programs()[category]]


@pytest.mark.ebpf
def test_doctor_shows_every_type_and_honours_the_switch(
    ebpf: None, run_cli: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DISABLE_ENV, "tracepoint,uprobe")
    result = run_cli("probes", "doctor", "--format", "json")
    assert result.exit_code == 0  # type: ignore[attr-defined]
    doc = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert set(doc["attach_types"]) == set(ATTACH_TYPES)
    assert doc["attach_types"]["uprobe"]["stage"] == "disabled"
    assert doc["attach_types"]["uretprobe"]["available"] is True
    assert doc["categories"]["function"]["attach_type"] is None
    if lockdown_mode() == "integrity":
        assert doc["attach_types"]["fentry"]["errno_name"] == "EPERM"
    monkeypatch.delenv(DISABLE_ENV)
    table = run_cli("probes", "doctor")
    for name in ATTACH_TYPES:
        assert name in table.stdout  # type: ignore[attr-defined]
