"""`agent run` over a directory of signed function maps: one collection, one chain per map.

Each map verified against the trust root is prepared here (plan, probe set, its chain's writer)
and collected by a thread of its own: its own probes, ring buffer and loop, so a map that fails
(a bad signature, no probe attachable, a full disk for its chain) ends alone and the others go
on. The main thread looks at the directory every `poll_seconds`:

- a map added is attached and collected into `<evidence>/SERVICE-HOST-DIGEST/` (DIGEST: the
  first 12 hex digits of the map file's sha256);
- a map removed is detached and its chain final-sealed;
- a map changed (a new sha256) ends its chain with a final seal and starts a new chain (a
  chain holds the evidence of one map: every record in it was collected for the nodes of that
  version, and `function-map verify` of the chain against its map stays meaningful); the new
  version is verified first: one that does not verify is refused and the old one collects on;
- a map refused (unsigned, badly signed, over the probe limit...) is one error line naming the
  file, said once per version of the file; a fixed file is tried again.

SIGTERM/SIGINT stop every collection at once (in parallel: each detaches and writes its final
seal), so the stop takes what the slowest map takes, not their sum.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import InputError, StellaError
from .instrument import ChainInstruments, Endpoint, stall_seconds
from .mapdir import MapDirectory, MapFile, Unreadable
from .sdnotify import Notifier

if TYPE_CHECKING:
    from ..collector.features import KernelFeatures
    from ..collector.run import PreparedSession
    from ..collector.session import Collector
    from ..formats.trust_root import TrustRoot
    from ..functionmap.load import LoadedFunctionMap
    from .config import AgentSettings

# The main loop's turn: how soon a stop, a dead collection or a watchdog ping is seen.
_TURN_SECONDS = 0.1


@dataclass
class _Collection:
    """One map being collected by its own thread."""

    file: MapFile
    session: PreparedSession
    instruments: ChainInstruments | None
    stop: threading.Event = field(default_factory=threading.Event)
    attached: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    last_tick: float = field(default_factory=time.monotonic)
    error: BaseException | None = None
    links_at_stop: int = 0

    @property
    def planned(self) -> int:
        return len(self.session.plan.specs)


class MapSupervisor:
    """The agent of `function_maps:`; `run` returns after the last final seal."""

    def __init__(
        self,
        settings: AgentSettings,
        metrics_listen: str | None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        from ..formats.trust_root import TrustRoot

        assert settings.maps is not None and settings.start.trust_root is not None
        self.settings = settings
        self.say = say
        self.trust_root: TrustRoot = TrustRoot.load(settings.start.trust_root)
        self.directory = MapDirectory(settings.maps.directory, skip=(settings.start.trust_root,))
        self.endpoint = (
            Endpoint(metrics_listen, settings.stall_seconds) if metrics_listen is not None else None
        )
        # How long a map's loop may go without a turn (`_allow_stall_of`): the systemd
        # watchdog's and /healthz's alike.
        self._stall = settings.stall_seconds
        self.collections: dict[str, _Collection] = {}
        # Files refused, by name: the sha256 refused (said once; a new version is tried again).
        self.refused: dict[str, str] = {}
        self.features: KernelFeatures | None = None
        self._stop = threading.Event()
        self._listing_error: str | None = None
        self._refused_shown: set[str] = set()

    # Life --------------------------------------------------------------------------------------
    def run(self, duration: float | None = None) -> None:
        """Collect until SIGTERM/SIGINT (taken over before anything attaches) or `duration`."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._stop.set()

        previous: dict[signal.Signals, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        try:
            self._run(duration)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self, duration: float | None) -> None:
        from ..collector.features import detect
        from ..errors import CollectorEnvironmentError

        self.directory.check()
        start = self.settings.start
        self.features = detect(start.tracefs_path, disable=start.disabled_attach_types)
        if not self.features.has("capabilities") and not self.features.has("bpf_syscall"):
            raise CollectorEnvironmentError(self.features.features["capabilities"].detail)
        deadline = None if duration is None else time.monotonic() + duration
        notifier = Notifier()
        try:
            if self.endpoint is not None:
                self.endpoint.start()
                self.say(f"metrics: {self.endpoint.url}")
            self._reconcile()
            # Ready once every map found at start is attached (or refused): a rolling update
            # waits for this node's agent to really collect.
            for collection in list(self.collections.values()):
                while not collection.attached.wait(_TURN_SECONDS) and not self._stop.is_set():
                    pass
            self._reap()
            status = self._status()
            self.say(status)
            if self.endpoint is not None:
                self.endpoint.health.ready()
            notifier.ready(status)
            poll = self.settings.maps.poll_seconds if self.settings.maps else 2.0
            next_poll = time.monotonic() + poll
            while not self._stop.wait(_TURN_SECONDS):
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                self._reap()
                if now >= next_poll:
                    self._reconcile()
                    next_poll = time.monotonic() + poll
                oldest = self._oldest_turn(now)
                if now - oldest <= self._stall_limit():
                    notifier.watchdog()
                if self.endpoint is not None:
                    # The stalled map's last turn: /healthz is bad once that map has been stuck
                    # for the stall time, not that time after the pings stopped.
                    self.endpoint.health.heartbeat(oldest)
        finally:
            notifier.stopping("detaching probes, writing the final seals")
            if self.endpoint is not None:
                self.endpoint.health.not_ready("stopping: final seals")
            self._end_all()
            if self.endpoint is not None:
                self.endpoint.close()

    def _stall_limit(self) -> float:
        return self._stall

    def _allow_stall_of(self, session: PreparedSession) -> None:
        """A map's loop turns once an aggregation window: the stall time is at least ten of its
        windows (`stall_seconds`)."""
        self._stall = max(self._stall, stall_seconds(session, self.settings.stall_seconds))
        if self.endpoint is not None:
            self.endpoint.health.stall_seconds = self._stall

    def _oldest_turn(self, now: float) -> float:
        """When the collection loop that turned least recently last turned (`now` without
        any): liveness is every loop's, one stuck map is a stuck agent."""
        return min((c.last_tick for c in self.collections.values()), default=now)

    def _status(self) -> str:
        probes = sum(len(c.session.collector.links) for c in self.collections.values())
        return (
            f"collecting: {len(self.collections)} function maps, {probes} probes attached, "
            f"{len(self.refused)} refused, watching {self.directory.directory} every "
            f"{self.settings.maps.poll_seconds if self.settings.maps else 0:g} s"
        )

    # The directory ----------------------------------------------------------------------------
    def _reconcile(self) -> None:
        """Bring the running collections in line with the directory."""
        try:
            found = self.directory.scan()
        except InputError as exc:
            if self._listing_error != exc.describe():
                self._listing_error = exc.describe()
                self.say(f"error: {exc.describe()} (the running maps keep collecting)")
            return
        self._listing_error = None
        for name in sorted(set(self.collections) - set(found)):
            self._end(name, "removed")
        self.refused = {n: sha for n, sha in self.refused.items() if n in found}
        for name, entry in found.items():
            running = self.collections.get(name)
            if isinstance(entry, Unreadable):
                # A file that cannot be read now (permissions, replaced by a FIFO): what runs
                # keeps running, on the version that was verified.
                if self.refused.get(name) != "":
                    self.refused[name] = ""
                    self.say(f"error: {entry.error.describe()} (function map not read)")
                continue
            if running is not None and running.file.sha256 == entry.sha256:
                self.refused.pop(name, None)  # readable again, as it was
                continue
            if self.refused.get(name) == entry.sha256:
                continue
            loaded = self._verified(entry, running)
            if loaded is None:
                continue  # refused; a verified older version, if any, keeps collecting
            self.refused.pop(name, None)
            if running is not None:
                self._end(name, f"changed (sha256 {entry.sha256[:12]})")
            self._start(entry, loaded)
        self._show_refused()

    def _show_refused(self) -> None:
        """stella_function_map_refused: 1 per file whose present version is refused (an alert:
        its service is not observed at all, or still on a version no longer in the directory)."""
        if self.endpoint is None:
            return
        family = self.endpoint.metrics.map_refused
        refused = {
            name
            for name, sha256 in self.refused.items()
            if name not in self.collections or self.collections[name].file.sha256 != sha256
        }
        for name in self._refused_shown - refused:
            family.remove(name)
        for name in refused - self._refused_shown:
            family.labels(function_map=name).set(1)
        self._refused_shown = refused

    def _refuse(self, entry: MapFile, exc: BaseException, kept: _Collection | None = None) -> None:
        self.refused[entry.name] = entry.sha256
        if isinstance(exc, StellaError):
            what = exc.describe()
            if exc.path != str(entry.path):
                what = f"{entry.path}: {what}"
        else:  # a bug must not end the other maps' collections
            what = f"{entry.path}: internal error: {type(exc).__name__}: {exc}"
        still = "the other maps keep collecting"
        if kept is not None:
            still = (
                f"its verified version {kept.file.sha256[:12]} keeps collecting, as do the "
                "other maps"
            )
        self.say(f"error: {what} (function map refused; {still})")

    def _verified(self, entry: MapFile, running: _Collection | None) -> LoadedFunctionMap | None:
        """The map checked against the trust root, or None (refused, said). Checked before a
        running version is ended: a badly signed update does not stop the collection."""
        from ..functionmap.load import parse_function_map

        try:
            for other in self.collections.values():
                if other.file.sha256 == entry.sha256:
                    raise InputError(
                        f"the same map as {other.file.name} (sha256 {entry.sha256[:12]}): one "
                        "chain per map",
                        path=entry.path,
                    )
            return parse_function_map(entry.raw, entry.path, self.trust_root)
        except Exception as exc:
            self._refuse(entry, exc, running)
            return None

    def _start(self, entry: MapFile, loaded: LoadedFunctionMap) -> None:
        from ..collector.run import chain_id_for, prepare

        try:
            service = str(loaded.function_map.service)
            options = dataclasses.replace(
                self.settings.start,
                function_map=entry.path,
                chain_id=chain_id_for(service, entry.sha256),
                probes_in_use=sum(c.planned for c in self.collections.values()),
            )
            session = prepare(options, loaded_map=loaded, features=self.features)
        except Exception as exc:
            self._refuse(entry, exc)
            return
        instruments = None
        self._allow_stall_of(session)
        if self.endpoint is not None:
            instruments = ChainInstruments(
                session, self.endpoint.metrics, self.settings.verify_every_seconds
            )
            instruments.hook()
        for note in session.notes:
            self.say(f"warning: {entry.name}: {note}")
        collection = _Collection(entry, session, instruments)
        collection.thread = threading.Thread(
            target=self._collect, args=(collection,), name=f"stella-map-{entry.name}", daemon=True
        )
        self.collections[entry.name] = collection
        collection.thread.start()

    def _collect(self, collection: _Collection) -> None:
        """A map's thread: attach, collect until told to stop, detach, final seal."""
        session, name = collection.session, collection.file.name
        collector = session.collector
        try:
            collector.start()
        except BaseException as exc:
            collection.error = exc
            try:
                session.writer.close(final=False)
            finally:
                collection.attached.set()
            return
        if collection.instruments is not None:
            collection.instruments.collecting()
        unobservable = len(session.plan.unobservable)
        for failure in collector.probe_failures[unobservable:]:
            self.say(
                f"warning: {name}: not attached: {failure.purl}#{failure.function_name} at "
                f"{failure.binary_path} ({failure.error}); named in the next seal"
            )
        self.say(
            f"collecting {name}: {len(collector.links)} probes attached, chain "
            f"{session.chain_dir}, {session.scope_summary}"
        )
        for warning in session.warnings:
            self.say(f"WARNING: {name}: {warning}")
        collection.attached.set()
        said = 0

        def tick(c: Collector) -> None:
            nonlocal said
            collection.last_tick = time.monotonic()
            # Health events (a binary replaced, a link lost) in the log as they happen.
            for event in c.health_events[said:]:
                self.say(f"warning: {name}: {event.describe()}")
            said = len(c.health_events)
            if collection.instruments is not None:
                collection.instruments.tick(c)

        try:
            collector.run(should_stop=collection.stop.is_set, on_tick=tick)
        except BaseException as exc:
            collection.error = exc
        finally:
            collection.links_at_stop = len(collector.links)
            try:
                collector.stop(final=True)
            except BaseException as exc:
                collection.error = collection.error or exc
            finally:
                if collection.instruments is not None:
                    collection.instruments.close()

    def _reap(self) -> None:
        """Collections whose thread ended by itself failed: said, their version refused."""
        for name, collection in list(self.collections.items()):
            thread = collection.thread
            if thread is None or thread.is_alive() or collection.stop.is_set():
                continue
            del self.collections[name]
            if collection.instruments is not None:
                collection.instruments.chain.remove()
            self._refuse(collection.file, collection.error or RuntimeError("collection ended"))
            self._show_refused()

    def _end(self, name: str, why: str) -> None:
        collection = self.collections.pop(name)
        collection.stop.set()
        if collection.thread is not None:
            collection.thread.join()
        self._ended(collection, why)

    def _ended(self, collection: _Collection, why: str) -> None:
        if collection.instruments is not None:
            collection.instruments.chain.remove()
        if collection.error is not None:
            self._refuse(collection.file, collection.error)
            return
        self.say(
            f"function map {collection.file.name} {why}: {collection.links_at_stop} probes "
            f"detached, chain {collection.session.chain_dir} final-sealed"
        )

    def _end_all(self) -> None:
        """Every collection stops at once: detaches and final seals run in parallel."""
        collections = list(self.collections.values())
        self.collections.clear()
        for collection in collections:
            collection.stop.set()
        for collection in collections:
            if collection.thread is not None:
                collection.thread.join()
            self._ended(collection, "stopped")
