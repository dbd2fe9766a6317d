"""Media benchmarks: the one-process rendition ladder, and what ``media.process_video`` adds to ffmpeg.

On a 720p ``testsrc2`` + ``sine`` clip (20 s; 6 s with ``quick``), encoded like a camera upload:

1. **ladder**: the 720p/480p/360p ladder made by one ffmpeg process (one decode, a ``split``, three
   encoders: ``actors.media.transcode.build_command``) against three separate ffmpeg runs, one per
   rendition (each decoding the source again), with the same encoder settings. Target >= 1.4x.
2. **overhead**: ``actors.media.service.process_video`` end to end (probe, the ffmpeg run with its
   progress, ffprobe of the outputs, the HLS master playlist, uploads to local storage, the asset
   row in SQLite) against the very same ffmpeg command run from a shell. Target <= 5 %. As the
   machine's load drifts between runs more than that, the time each run spends outside ffmpeg is
   reported too (``process_video_inrun_overhead_pct``).

Contenders alternate order every round (A B, B A, ...) so that drift in the machine's load favours
none; a figure is the median over rounds, and a ratio the median of per-round ratios. CPU time
(ffmpeg children included) is reported beside wall time: it is what the work costs, whoever else
runs on the machine.

``python -m bench.media [--quick] [--rounds N] [--output PATH]`` prints a table per benchmark and
writes the figures to ``var/bench/media.json``; it exits 0 whatever they are (they are reported,
never asserted), 1 if ffmpeg could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy.orm import Session

from actors.media import service, transcode
from bench.report import machine, start_run, write_json
from brokers.settings import Settings
from store.db import make_engine
from store.models import Base, MediaAsset
from store.storage import LocalStorage

logger = logging.getLogger(__name__)

LADDER = ("720p", "480p", "360p")
LADDER_TARGET = 1.4
OVERHEAD_TARGET_PCT = 5.0
DEFAULT_OUTPUT = Path("var/bench/media.json")


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # this process and its waited-for children (ffmpeg), user + system


def timed(work: Callable[[], object]) -> Timing:
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        getattr(after, field) - getattr(before, field)
        for before, after in ((before_self, after_self), (before_children, after_children))
        for field in ("ru_utime", "ru_stime")
    )
    return Timing(wall, cpu)


def make_source(path: Path, seconds: int) -> Path:
    """A 1280x720 30 fps clip with sound, H.264 CRF 18 (a good camera's upload), index at the end."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    args += ["-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}"]
    args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "128k", "-shortest", str(path)]
    subprocess.run(args, check=True, timeout=600)
    return path


def ladder_job(source: Path, seconds: float, *, hls: bool, thumbnails: int) -> transcode.TranscodeJob:
    return transcode.TranscodeJob(
        source=source,
        width=1280,
        height=720,
        duration=float(seconds),
        video_index=0,
        audio_index=1,
        renditions=transcode.plan_ladder(1280, 720, LADDER),
        hls=hls,
        thumbnails=thumbnails,
    )


def fresh_dir(parent: Path, name: str, subdirs: Sequence[str] = ()) -> Path:
    path = parent / name
    shutil.rmtree(path, ignore_errors=True)
    for sub in [".", *subdirs]:
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def one_process_ladder(source: Path, seconds: float, work: Path, settings: Settings) -> None:
    job = ladder_job(source, seconds, hls=False, thumbnails=0)
    out = fresh_dir(work, "one", job.directories())
    command = transcode.build_command(job, preset=settings.ffmpeg_preset, threads=settings.ffmpeg_threads)
    subprocess.run(command, cwd=out, check=True, stdout=subprocess.DEVNULL, timeout=3600)


def separate_ladder(source: Path, seconds: float, work: Path, settings: Settings) -> None:
    """One ffmpeg per rendition, each decoding the source: the same encoder settings otherwise."""
    out = fresh_dir(work, "separate", ["mp4"])
    for rendition in transcode.plan_ladder(1280, 720, LADDER):
        single = dataclasses.replace(
            ladder_job(source, seconds, hls=False, thumbnails=0), renditions=[rendition]
        )
        command = transcode.build_command(
            single, preset=settings.ffmpeg_preset, threads=settings.ffmpeg_threads
        )
        subprocess.run(command, cwd=out, check=True, stdout=subprocess.DEVNULL, timeout=3600)


def service_run(media: service.Media, asset_id: int, ffmpeg_seconds: list[float]) -> None:
    summary = service.process_video(media, asset_id=asset_id, renditions=list(LADDER))
    ffmpeg_seconds.append(float(summary["ffmpeg_s"]))


def shell_run(source: Path, seconds: float, work: Path, settings: Settings) -> None:
    """The command ``process_video`` runs, typed into a shell: ``mkdir -p ... && ffmpeg ...``."""
    job = ladder_job(source, seconds, hls=True, thumbnails=5)
    out = fresh_dir(work, "shell")
    command = transcode.build_command(
        job, ffmpeg_path=settings.ffmpeg_path, preset=settings.ffmpeg_preset, threads=settings.ffmpeg_threads
    )
    line = f"mkdir -p {' '.join(job.directories())} && {shlex.join(command)} > /dev/null"
    subprocess.run(line, shell=True, cwd=out, check=True, timeout=3600)


def alternate(
    rounds: int, first: tuple[str, Callable[[], object]], second: tuple[str, Callable[[], object]]
) -> dict[str, list[Timing]]:
    results: dict[str, list[Timing]] = {first[0]: [], second[0]: []}
    for index in range(rounds):
        for name, work in (first, second) if index % 2 == 0 else (second, first):
            timing = timed(work)
            results[name].append(timing)
            logger.info(
                "round %d/%d: %s: %.2f s wall, %.2f s CPU", index + 1, rounds, name, timing.wall, timing.cpu
            )
    return results


def ratios(numerators: list[Timing], denominators: list[Timing], attribute: str) -> float:
    """The median of the per-round ratios of ``attribute`` (``wall`` or ``cpu``)."""
    per_round: list[float] = [
        getattr(n, attribute) / getattr(d, attribute) for n, d in zip(numerators, denominators, strict=True)
    ]
    return statistics.median(per_round)


@dataclass(frozen=True)
class Results:
    """The timings of every contender (by name, one per round) and the figures drawn from them."""

    timings: dict[str, list[Timing]]
    figures: dict[str, float]


def run(quick: bool = False, rounds: int | None = None) -> Results:
    """Run both benchmarks; return their timings and figures (seconds, ratios, percentages)."""
    seconds = 6 if quick else 20
    rounds = rounds or (1 if quick else 3)
    settings = Settings(media_temp_dir=None)
    with tempfile.TemporaryDirectory(prefix="edujobs-bench-media-") as tmp:
        root = Path(tmp)
        logger.info("Making a %d s 720p source clip...", seconds)
        source = make_source(root / "lesson-720p.mp4", seconds)
        work = root / "work"

        ladder = alternate(
            rounds,
            ("one process", lambda: one_process_ladder(source, seconds, work, settings)),
            ("three processes", lambda: separate_ladder(source, seconds, work, settings)),
        )

        engine = make_engine(f"sqlite:///{root}/bench.db")
        Base.metadata.create_all(engine)
        storage = LocalStorage(root / "storage")
        storage.put_file("uploads/lesson.mp4", source)
        with Session(engine) as session:
            session.add(MediaAsset(id=1, kind="video", source_uri="uploads/lesson.mp4"))
            session.commit()
        media = service.Media(engine=engine, storage=storage, settings=settings)
        ffmpeg_seconds: list[float] = []
        overhead = alternate(
            rounds,
            ("process_video", lambda: service_run(media, 1, ffmpeg_seconds)),
            ("shell ffmpeg", lambda: shell_run(storage.path("uploads/lesson.mp4"), seconds, work, settings)),
        )
        engine.dispose()

    one, three = ladder["one process"], ladder["three processes"]
    ours, shell = overhead["process_video"], overhead["shell ffmpeg"]
    figures = {
        "source_seconds": float(seconds),
        "rounds": float(rounds),
        "ladder_one_process_s": statistics.median(t.wall for t in one),
        "ladder_three_processes_s": statistics.median(t.wall for t in three),
        "ladder_speedup": ratios(three, one, "wall"),
        "ladder_speedup_cpu": ratios(three, one, "cpu"),
        "ladder_speedup_target": LADDER_TARGET,
        "ladder_realtime_factor": seconds / statistics.median(t.wall for t in one),
        "process_video_s": statistics.median(t.wall for t in ours),
        "shell_ffmpeg_s": statistics.median(t.wall for t in shell),
        "process_video_overhead_pct": (ratios(ours, shell, "wall") - 1) * 100,
        "process_video_overhead_cpu_pct": (ratios(ours, shell, "cpu") - 1) * 100,
        # Within each process_video run: the time spent outside ffmpeg (probe, ffprobe of the outputs,
        # uploads, database), immune to the machine's load drifting between runs.
        "process_video_outside_ffmpeg_s": statistics.median(
            t.wall - f for t, f in zip(ours, ffmpeg_seconds, strict=True)
        ),
        "process_video_inrun_overhead_pct": statistics.median(
            (t.wall - f) / f * 100 for t, f in zip(ours, ffmpeg_seconds, strict=True)
        ),
        "process_video_overhead_target_pct": OVERHEAD_TARGET_PCT,
    }
    for name, value in figures.items():
        logger.info("%s = %.3f", name, value)
    return Results(timings={**ladder, **overhead}, figures=figures)


def _seconds(timings: list[Timing]) -> tuple[str, str, str]:
    """Median wall, per-round walls and median CPU, as table cells."""
    return (
        f"{statistics.median(t.wall for t in timings):.2f}",
        " / ".join(f"{t.wall:.2f}" for t in timings),
        f"{statistics.median(t.cpu for t in timings):.2f}",
    )


def tables(results: Results) -> list[Table]:
    """One table per benchmark: each contender's seconds, then the figure against its target."""
    figures, timings = results.figures, results.timings
    speedup, overhead = figures["ladder_speedup"], figures["process_video_overhead_pct"]
    ladder = Table(
        title=f"Rendition ladder {'/'.join(LADDER)} of a {figures['source_seconds']:.0f} s 720p clip",
        title_justify="left",
        caption=f"one process runs at {figures['ladder_realtime_factor']:.1f}x real time",
        caption_justify="left",
    )
    end_to_end = Table(
        title="media.process_video end to end vs the same ffmpeg command from a shell",
        title_justify="left",
        caption=(
            f"within each process_video run, {figures['process_video_outside_ffmpeg_s']:.2f} s "
            f"({figures['process_video_inrun_overhead_pct']:.1f} %) is spent outside ffmpeg"
        ),
        caption_justify="left",
    )
    rows = (
        (ladder, ("one process", "three processes")),
        (end_to_end, ("process_video", "shell ffmpeg")),
    )
    for table, names in rows:
        for column in ("contender", "median s", "per round s", "CPU s"):
            table.add_column(column, justify="left" if column == "contender" else "right")
        for name in names:
            table.add_row(name, *_seconds(timings[name]))
        table.add_section()
    ladder.add_row(
        "speed-up (three / one)",
        f"{speedup:.2f}x",
        f"CPU {figures['ladder_speedup_cpu']:.2f}x",
        f"target >= {LADDER_TARGET:g}x: " + ("met" if speedup >= LADDER_TARGET else "NOT met"),
    )
    end_to_end.add_row(
        "overhead (process_video / shell)",
        f"{overhead:+.1f} %",
        f"CPU {figures['process_video_overhead_cpu_pct']:+.1f} %",
        f"target <= {OVERHEAD_TARGET_PCT:g} %: " + ("met" if overhead <= OVERHEAD_TARGET_PCT else "NOT met"),
    )
    return [ladder, end_to_end]


def document(results: Results, *, quick: bool, started: float, before: dict[str, Any]) -> dict[str, Any]:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "quick": quick,
        "machine_before": before,
        "machine_after": machine(),
        "figures": results.figures,
        "timings": {
            name: [dataclasses.asdict(t) for t in timings] for name, timings in results.timings.items()
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.media",
        description="The one-process rendition ladder vs three ffmpeg runs, and process_video's overhead.",
    )
    parser.add_argument("--quick", action="store_true", help="a 6 s clip and one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds per benchmark (default 3, or 1 with --quick)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file (default {DEFAULT_OUTPUT})"
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = start_run()
    started, before = time.time(), machine()
    try:
        results = run(quick=args.quick, rounds=args.rounds)
    except (OSError, subprocess.SubprocessError) as e:
        console.print(f"[red]benchmark failed:[/red] {e}")
        return 1
    for table in tables(results):
        console.print(table)
    write_json(args.output, document(results, quick=args.quick, started=started, before=before))
    console.print(f"Figures written to {args.output} ({time.time() - started:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
