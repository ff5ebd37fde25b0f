"""``lipcast bench chaos``: the RabbitMQ render queue as a live stream meets it at its worst.

Against the broker of ``[queue] url`` / LIPCAST_AMQP_URL, in a virtual host of its own (made
with ``rabbitmqctl`` and deleted afterwards, so the forced close below touches no one else's
connections), the same load runs twice on three render worker processes:

1. **Fault-free**: ``--conversations`` conversations of ``--sentences`` sentence jobs each,
   started one after another over the run, each sentence submitted as an LLM would hand it
   over and read back in order. The workers serve them with the real result shape (the
   sentence's speech as PCM, then its MP4), a sleep standing in for TTS and rendering.
2. **Chaos**: the same load while a worker is SIGKILLed mid-job every ``--kill-every-s``
   seconds and replaced (the next kill waits for the replacement to serve), every
   connection of the vhost is closed once (``rabbitmqctl close_all_connections``), and
   poison messages arrive: jobs that kill every worker that starts them, and a message that
   fails validation.

Printed figures: ``jobs`` (normal jobs per run), ``delivered``, ``lost`` (no complete result),
``duplicated`` (a part handed to the reader twice), ``out_of_order`` (parts out of order or
belonging to another job), ``false_dead_letters`` (normal jobs found in the dead letters),
``poison_dead_lettered`` (poison messages found there, with reason ``poison`` or ``invalid``),
``kills`` (SIGKILLs sent by the benchmark; poison jobs kill more workers themselves), and the
95th percentile of submit-to-last-part seconds without and with the faults. The target:
nothing lost, duplicated, out of order or falsely dead-lettered, every poison message
dead-lettered, and ``p95_chaos_s`` at most 3 x ``p95_fault_free_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from yarl import URL

from pipeline.clips import pcm_content_type
from pipeline.errors import ConfigError, LipcastError
from pipeline.jobs.queue import QueueOptions
from pipeline.jobs.wire import (
    DEAD_REASON_HEADER,
    ERROR_INVALID,
    ERROR_POISON,
    RenderJob,
    RenderResult,
)
from pipeline.jobs.worker import ResultChunk

if TYPE_CHECKING:
    from lipcast.cli import Context
    from pipeline.jobs.queue.rabbitmq import RabbitJobQueue

log = logging.getLogger(__name__)

HELP = "render queue under chaos: worker kills, a forced close, poison; loss and p95 tail"

POISON_TEXT = "poison: "  # a bench worker that starts a job with this text SIGKILLs itself
SAMPLE_RATE = 24_000
SPEECH_S = 2.5  # a sentence's speech: its PCM part is this long
MP4_BYTES = 250_000  # a sprite clip of a sentence, H.264 + AAC, is about this size
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conversations", type=int, default=30, help="conversations per run")
    parser.add_argument("--sentences", type=int, default=4, help="sentence jobs each")
    parser.add_argument("--workers", type=int, default=3, help="render worker processes")
    parser.add_argument(
        "--render-s", type=float, default=0.3, help="seconds a worker spends per sentence"
    )
    parser.add_argument(
        "--duration-s", type=float, default=30.0, help="seconds over which conversations start"
    )
    parser.add_argument(
        "--kill-every-s", type=float, default=3.0, help="a worker is killed mid-job this often"
    )
    parser.add_argument(
        "--poison", type=int, default=3, help="poison messages (one in three fails validation)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed, to repeat a run")
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the workers' logs (-v) in this folder"
    )


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    for name in ("conversations", "sentences", "workers", "render_s", "duration_s"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be more than 0")
    if shutil.which("rabbitmqctl") is None:
        raise ConfigError(
            "lipcast bench chaos needs rabbitmqctl on PATH (on the broker's machine, as a user "
            "allowed to run it) to make a vhost of its own and close its connections"
        )
    from lipcast.wiring import job_queue_options

    options = job_queue_options(
        context.settings, context.secrets, connection_name="lipcast bench chaos"
    )
    return asyncio.run(_bench(args, options))


async def _bench(args: argparse.Namespace, base: QueueOptions) -> dict[str, Any]:
    rng = random.Random(args.seed)
    vhost = f"lipcast-chaos-{uuid.uuid4().hex[:10]}"
    url = URL(base.url)
    await _rabbitmqctl("add_vhost", vhost)
    try:
        await _rabbitmqctl("set_permissions", "-p", vhost, url.user or "guest", ".*", ".*", ".*")
        options = replace(base, url=str(url.with_path("/" + vhost)), max_length=10_000)
        with tempfile.TemporaryDirectory(prefix="lipcast-chaos-") as scratch:
            logs = args.logs or Path(scratch)
            logs.mkdir(parents=True, exist_ok=True)
            calm = await _scenario(args, options, logs / "fault-free", rng, chaos=False)
            wild = await _scenario(args, options, logs / "chaos", rng, chaos=True)
            tracebacks = _tracebacks(logs / "fault-free") + _tracebacks(logs / "chaos")
    finally:
        await _rabbitmqctl("delete_vhost", vhost)
    print(
        f"lipcast bench chaos: fault-free p95 {calm.p95:.3f} s; chaos p95 {wild.p95:.3f} s, "
        f"max {wild.max_latency:.3f} s; {wild.forced_closes} forced close, "
        f"{wild.worker_deaths} worker deaths ({wild.kills} by the benchmark); "
        f"{tracebacks} tracebacks in the workers' logs",
        file=sys.stderr,
    )
    for latency, what, at in sorted(wild.slow, reverse=True)[:10]:
        stamp = time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"
        log.info("slow under chaos: %s submitted %s took %.3f s", what, stamp, latency)
    return {
        "jobs": wild.jobs,
        "delivered": wild.delivered,
        "lost": wild.lost,
        "duplicated": wild.duplicated,
        "out_of_order": wild.out_of_order,
        "false_dead_letters": wild.false_dead_letters,
        "poison_dead_lettered": wild.poison_dead_lettered,
        "kills": wild.kills,
        "p95_fault_free_s": round(calm.p95, 3),
        "p95_chaos_s": round(wild.p95, 3),
    }


# -- one run -----------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Tally:
    jobs: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    false_dead_letters: int = 0
    poison_dead_lettered: int = 0
    kills: int = 0
    worker_deaths: int = 0
    forced_closes: int = 0
    latencies: list[float] = field(default_factory=list)
    slow: list[tuple[float, str, float]] = field(default_factory=list)  # (s, job, submitted at)

    @property
    def p95(self) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=float("nan"))


async def _scenario(
    args: argparse.Namespace,
    base: QueueOptions,
    logs: Path,
    rng: random.Random,
    *,
    chaos: bool,
) -> _Tally:
    from pipeline.jobs.queue.rabbitmq import RabbitJobQueue

    options = replace(base, name=f"lipcast.chaos.{uuid.uuid4().hex[:10]}")
    await asyncio.to_thread(logs.mkdir, exist_ok=True)
    tally = _Tally(jobs=args.conversations * args.sentences)
    normal_ids: set[str] = set()
    poison_ids: set[str] = set()
    pool = _WorkerPool(options, logs, render_s=args.render_s)
    requester = RabbitJobQueue(options)
    await requester.start()
    try:
        await pool.start(args.workers)
        faults: list[asyncio.Task[None]] = []
        if chaos:
            faults = [
                asyncio.create_task(
                    _killer(pool, tally, args.kill_every_s, rng), name="chaos-killer"
                ),
                asyncio.create_task(
                    _forced_close(options, tally, args.duration_s * 0.45), name="chaos-close"
                ),
                asyncio.create_task(
                    _poison(requester, options, args, poison_ids, rng), name="chaos-poison"
                ),
            ]
        conversations = []
        for index in range(args.conversations):
            conversations.append(
                asyncio.create_task(
                    _conversation(requester, index, args, tally, normal_ids),
                    name=f"chaos-conversation-{index}",
                )
            )
            await asyncio.sleep(args.duration_s / args.conversations)
        await asyncio.gather(*conversations)
        for task in faults:
            task.cancel()
        results = await asyncio.gather(*faults, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
    finally:
        await requester.close()
        tally.worker_deaths = await pool.stop()
    dead = await _dead_letters(options)
    tally.false_dead_letters = sum(1 for job_id, _ in dead if job_id in normal_ids)
    tally.poison_dead_lettered = sum(
        1
        for job_id, reason in dead
        if job_id in poison_ids and reason in (ERROR_POISON, ERROR_INVALID)
    )
    return tally


def _job(text: str, *, turn_id: str, seq: int, ttl_s: float = 20.0) -> RenderJob:
    now = time.time()
    return RenderJob(
        job_id=uuid.uuid4().hex,
        turn_id=turn_id,
        seq=seq,
        text=text,
        persona="bench",
        created_at=now,
        deadline=now + ttl_s,
    )


async def _conversation(
    requester: RabbitJobQueue,
    index: int,
    args: argparse.Namespace,
    tally: _Tally,
    normal_ids: set[str],
) -> None:
    """Submit a turn's sentences as an LLM hands them over; read each back, in order."""
    turn = f"turn-{index}"
    readers: list[asyncio.Task[None]] = []
    for seq in range(args.sentences):
        job = _job(f"Sentence {seq} of conversation {index}.", turn_id=turn, seq=seq)
        normal_ids.add(job.job_id)
        readers.append(
            asyncio.create_task(_read(requester, job, tally), name=f"chaos-read-{job.job_id}")
        )
        await asyncio.sleep(0.25)
    await asyncio.gather(*readers)


async def _read(requester: RabbitJobQueue, job: RenderJob, tally: _Tally) -> None:
    submitted = time.perf_counter()
    try:
        stream = await requester.submit(job)
        parts = [part async for part in stream]
    except LipcastError as err:
        tally.lost += 1
        print(f"lipcast bench chaos: job {job.job_id} lost: {err}", file=sys.stderr)
        return
    seen: set[int] = set()
    duplicated = 0
    in_order = [part.part for part in parts] == [0, 1] and parts[-1].last
    for part in parts:
        if part.part in seen:
            duplicated += 1
        seen.add(part.part)
        in_order = in_order and _belongs(part, job)
    tally.duplicated += duplicated
    if not in_order:
        tally.out_of_order += 1
        return
    tally.delivered += 1
    latency = time.perf_counter() - submitted
    tally.latencies.append(latency)
    tally.slow.append((latency, f"{job.turn_id}/{job.seq} {job.job_id}", time.time() - latency))


def _belongs(part: RenderResult, job: RenderJob) -> bool:
    return part.media.startswith(f"{job.job_id}/{part.part}/".encode())


# -- faults ------------------------------------------------------------------------------


async def _killer(pool: _WorkerPool, tally: _Tally, every_s: float, rng: random.Random) -> None:
    """SIGKILL a worker in the middle of a job every ``every_s`` seconds (give or take).

    The next kill also waits until the last victim's replacement is serving: on a loaded
    machine starting Python can take longer than ``every_s``, and killing faster than workers
    start would measure the machine, not the queue.
    """
    while True:
        await asyncio.sleep(every_s * rng.uniform(0.8, 1.2))
        await pool.full_strength()
        victim = await pool.busy_worker(rng)
        victim.kill()
        tally.kills += 1


async def _forced_close(options: QueueOptions, tally: _Tally, after_s: float) -> None:
    await asyncio.sleep(after_s)
    vhost = URL(options.url).path.lstrip("/")
    await _rabbitmqctl("close_all_connections", "--vhost", vhost, "lipcast bench chaos")
    tally.forced_closes += 1


async def _poison(
    requester: RabbitJobQueue,
    options: QueueOptions,
    args: argparse.Namespace,
    poison_ids: set[str],
    rng: random.Random,
) -> None:
    """Poison messages spread over the run: every third fails validation, the rest kill."""
    waits: list[asyncio.Task[None]] = []
    for index in range(args.poison):
        await asyncio.sleep(args.duration_s / (args.poison + 1) * rng.uniform(0.8, 1.2))
        if index % 3 == 1:
            poison_ids.add(await _inject_invalid(options))
            continue
        job = _job(f"{POISON_TEXT}{index}", turn_id=f"poison-{index}", seq=0)
        poison_ids.add(job.job_id)
        waits.append(asyncio.create_task(_expect_failure(requester, job), name="chaos-poison"))
    await asyncio.gather(*waits)


async def _expect_failure(requester: RabbitJobQueue, job: RenderJob) -> None:
    with contextlib.suppress(LipcastError):
        await (await requester.submit(job)).collect()


async def _inject_invalid(options: QueueOptions) -> str:
    """A job message of an unknown wire version, as a newer or broken requester sends it."""
    import aio_pika

    job_id = uuid.uuid4().hex
    async with await aio_pika.connect(options.url) as connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                b"from the future",
                headers={"version": 99, "job_id": job_id},
                type="render_job",
                message_id=job_id,
            ),
            routing_key=options.name,
        )
    return job_id


async def _dead_letters(options: QueueOptions) -> list[tuple[str, str]]:
    """(job id, reason) of every dead letter; the run's queues are deleted afterwards."""
    import aio_pika

    found: list[tuple[str, str]] = []
    async with await aio_pika.connect(options.url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(options.dead_letter_queue, passive=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            headers = dict(message.headers or {})
            reason = headers.get(DEAD_REASON_HEADER) or "broker"
            found.append((str(headers.get("job_id") or message.message_id), str(reason)))
        for name in (options.name, options.dead_letter_queue, options.suspect_queue):
            await channel.queue_delete(name)
        for exchange in (options.dead_letter_exchange, options.awaiting_exchange):
            await channel.exchange_delete(exchange)
    return found


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise ConfigError(
            f"rabbitmqctl {' '.join(args[:2])} failed ({process.returncode}): "
            f"{output.decode(errors='replace').strip()[-300:]}; lipcast bench chaos must run "
            "where rabbitmqctl may manage the broker"
        )


def _tracebacks(logs: Path) -> int:
    return sum(path.read_text(errors="replace").count("Traceback") for path in logs.iterdir())


# -- the worker processes ----------------------------------------------------------------


class _Worker:
    """One bench worker process and what it says it is doing."""

    def __init__(self, process: asyncio.subprocess.Process, log: IO[bytes], *, standby: bool):
        self.process = process
        self.standby = standby  # imported and waiting for "go" on stdin before connecting
        self.current: str | None = None  # the job it is rendering
        self.loaded = asyncio.Event()  # a standby has imported everything
        self.ready = asyncio.Event()  # consuming jobs
        self._log = log
        self._reader = asyncio.create_task(self._read(), name=f"chaos-worker-{process.pid}")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            word, _, job_id = raw.decode().strip().partition(" ")
            if word == "loaded":
                self.loaded.set()
            elif word == "ready":
                self.ready.set()
            elif word == "started":
                self.current = job_id
            elif word == "finished":
                self.current = None

    def promote(self) -> None:
        """Tell a standby to connect and serve."""
        assert self.process.stdin is not None
        self.standby = False
        self.process.stdin.write(b"go\n")

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    async def wait(self) -> int:
        code = await self.process.wait()
        await self._reader
        self._log.close()
        return code


class _WorkerPool:
    """``count`` serving worker processes, and standbys that take a dead one's place.

    A standby has started Python and imported everything, and connects only when promoted,
    as a supervisor with a warm spare would run render workers; so a replacement serves
    within a fraction of a second however busy this machine is, and the benchmark measures
    the queue rather than how fast the machine starts Python.
    """

    def __init__(self, options: QueueOptions, logs: Path, *, render_s: float) -> None:
        self._spec = {
            "name": options.name,
            "render_s": render_s,
            "max_attempts": options.max_attempts,
            "reconnect_interval_s": options.reconnect_interval_s,
            "connect_timeout_s": options.connect_timeout_s,
        }
        self._env = {**os.environ, "LIPCAST_AMQP_URL": options.url}
        self._env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])
        )
        self._logs = logs
        self._workers: list[_Worker] = []
        self._standbys: list[_Worker] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._count = 0
        self.deaths = 0

    async def start(self, count: int, *, standbys: int = 3) -> None:
        self._count = count
        workers = [await self._spawn(standby=False) for _ in range(count)]
        spares = [await self._spawn(standby=True) for _ in range(standbys)]
        async with asyncio.timeout(120):
            await asyncio.gather(*(worker.ready.wait() for worker in workers))
            await asyncio.gather(*(spare.loaded.wait() for spare in spares))

    async def _spawn(self, *, standby: bool) -> _Worker:
        code = "import sys; from lipcast.benchmarks.chaos import worker_main; worker_main()"
        log = (self._logs / f"worker-{uuid.uuid4().hex[:8]}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            json.dumps({**self._spec, "standby": standby}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=self._env,
        )
        worker = _Worker(process, log, standby=standby)
        (self._standbys if standby else self._workers).append(worker)
        watcher = asyncio.create_task(self._replace_when_dead(worker), name="chaos-watch")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return worker

    async def _replace_when_dead(self, worker: _Worker) -> None:
        await worker.wait()
        was_standby = worker.standby
        (self._standbys if was_standby else self._workers).remove(worker)
        if self._stopping:
            return
        if not was_standby:
            self.deaths += 1
            spares = [spare for spare in self._standbys if spare.loaded.is_set()]
            if spares:
                spare = spares[0]
                self._standbys.remove(spare)
                self._workers.append(spare)
                spare.promote()
            else:
                await self._spawn(standby=False)
        await self._spawn(standby=True)

    async def full_strength(self) -> None:
        """Wait until ``count`` workers are serving (replacements included)."""
        while sum(1 for w in self._workers if w.ready.is_set()) < self._count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # replacements come and go; polling is simplest

    async def busy_worker(self, rng: random.Random) -> _Worker:
        """A worker in the middle of a job, once there is one."""
        while True:
            busy = [w for w in self._workers if w.current and w.process.returncode is None]
            if busy:
                return rng.choice(busy)
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        """SIGTERM every worker and wait for it; the number of deaths on the way."""
        self._stopping = True
        for worker in [*self._workers, *self._standbys]:
            if worker.process.returncode is None:
                worker.process.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(*self._watchers, return_exceptions=True)
        for worker in [*self._workers, *self._standbys]:
            worker.kill()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        return self.deaths


class _ChaosHandler:
    """A sentence's speech (PCM) after 40 % of ``render_s``, its MP4 after the rest.

    Each part's media starts with ``<job id>/<part>/`` so the reader can tell whose it is.
    """

    def __init__(self, render_s: float) -> None:
        self._render_s = render_s
        self._pcm_bytes = int(SPEECH_S * SAMPLE_RATE) * 2

    @staticmethod
    def _media(job: RenderJob, part: int, size: int) -> bytes:
        mark = f"{job.job_id}/{part}/".encode()
        return mark + bytes(size - len(mark))

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        _say(f"started {job.job_id}")
        if job.text.startswith(POISON_TEXT):
            os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(self._render_s * 0.4)
        yield ResultChunk(
            media=self._media(job, 0, self._pcm_bytes),
            content_type=pcm_content_type(SAMPLE_RATE),
            duration_s=SPEECH_S,
        )
        await asyncio.sleep(self._render_s * 0.6)
        _say(f"finished {job.job_id}")
        yield ResultChunk(media=self._media(job, 1, MP4_BYTES), duration_s=SPEECH_S, last=True)

    async def aclose(self) -> None:
        return None


def _say(line: str) -> None:
    print(line, flush=True)


def worker_main() -> None:
    """Entry point of a bench worker process: ``serve`` as ``lipcast -v worker`` runs it."""
    from lipcast.logs import setup_logging
    from pipeline.jobs.queue.rabbitmq import RabbitJobQueue
    from pipeline.jobs.worker import serve

    spec = json.loads(sys.argv[1])
    if spec.get("standby"):
        _say("loaded")
        if sys.stdin.readline().strip() != "go":
            return  # the benchmark ended before this standby was needed
    setup_logging(1, [])
    options = replace(
        QueueOptions(),
        url=os.environ["LIPCAST_AMQP_URL"],
        name=spec["name"],
        max_length=10_000,
        max_attempts=spec["max_attempts"],
        reconnect_interval_s=spec["reconnect_interval_s"],
        connect_timeout_s=spec["connect_timeout_s"],
        connection_name=f"lipcast bench chaos worker {os.getpid()}",
    )

    async def main() -> None:
        queue = RabbitJobQueue(options)
        await queue.start()
        try:
            await serve(queue, _ChaosHandler(spec["render_s"]), on_ready=lambda: _say("ready"))
        finally:
            await queue.close()

    asyncio.run(main())
