"""``einvoice-monitor simulate``: the command and the function behind it.

The command is registered on the main CLI by ``cli/main.py``; its options live here with the
model they describe. Heavy imports (numpy, the generator) happen when it runs, not when the CLI loads.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import console, load_settings, resolve_bootstrap
from cli.progress import progress_bar

if TYPE_CHECKING:
    from rich.console import Console

    from base.config import Settings

DEFAULT_SCALE = 0.02
DEFAULT_START = dt.date(2024, 6, 1)
DEFAULT_DAYS = 7


class Target(StrEnum):
    kafka = "kafka"
    files = "files"


class PartitionBy(StrEnum):
    day = "day"
    hour = "hour"


class Noise(StrEnum):
    poisson = "poisson"
    realistic = "realistic"
    harsh = "harsh"


class Codec(StrEnum):
    deflate = "deflate"
    null = "null"


def simulate_command(
    scale: Annotated[float | None, typer.Option(
        help="Population and volume relative to Thanh Hóa: 1.0 = 54,620 issuers by June 2024 and ~1.88 M "
             "invoices a day. Default: the scenario's run.scale, else 0.02.")] = None,
    start: Annotated[str | None, typer.Option(
        help="First local issue day, YYYY-MM-DD (Asia/Ho_Chi_Minh). Default: the scenario's run.start, "
             "else 2024-06-01.")] = None,
    days: Annotated[int | None, typer.Option(
        help="Issue days to simulate. Default: the scenario's run.days, else 7.")] = None,
    end: Annotated[str | None, typer.Option(help="Last local issue day, inclusive (instead of --days).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed and arguments, byte-identical output.")] = 1,
    scenario: Annotated[list[Path] | None, typer.Option(
        "--scenario", exists=True, dir_okay=False,
        help="A scenario file (scenarios/*.yaml): changes against the baseline, with ground truth. "
             "Repeatable.")] = None,
    to: Annotated[Target, typer.Option(help="Publish to Kafka (registry first) or write Avro container files.")] = (
        Target.kafka),
    out: Annotated[Path | None, typer.Option(
        help="Directory of the files (--to files), the manifest and ground_truth.json. "
             "Default: $EINVOICE_DATA_DIR/simulate.")] = None,
    rate: Annotated[float | None, typer.Option(
        help="Kafka: target records per second (default: as fast as possible).")] = None,
    speed: Annotated[float | None, typer.Option(
        help="Kafka: replay simulated time at this speed (1 = real time, 60 = an hour a minute).")] = None,
    late_share: Annotated[float, typer.Option(
        help="Share of invoices from offline registers, received 5 minutes to 2 days late.")] = 0.03,
    duplicate_share: Annotated[float, typer.Option(
        help="Share of valid invoices the register sends twice (same bytes, seconds to minutes later).")] = 0.02,
    malformed_share: Annotated[float, typer.Option(
        help="Share of invoices sent malformed, in turn in each way the decoder and validator reject.")] = 0.01,
    partition_by: Annotated[PartitionBy, typer.Option(
        help="Files: one per local receive day or hour.")] = PartitionBy.day,
    codec: Annotated[Codec, typer.Option(help="Files: Avro block compression.")] = Codec.deflate,
    invoices: Annotated[int | None, typer.Option(
        help="About this many valid invoices in the run: rescales every issuer's rate, the population "
             "stays at --scale (quick demos and tests).")] = None,
    noise: Annotated[Noise, typer.Option(
        help="poisson: the calibrated model, sellers' days near Poisson. realistic: lumpy sellers, fixed closed "
             "weekdays, part-time sellers, churn, month turn, district shocks, a holiday with closures "
             "(simulator/README.md); its draws go to ground_truth.json. harsh: the same kinds pushed past "
             "what we believe real ([noise.harsh]), to check rules on a world they were not made on.")] = Noise.poisson,
) -> None:  # fmt: skip
    """Generate the simulated Thanh Hóa registry and cash-register invoice feed, to Kafka or to files.

    Deterministic. Scenario files inject drops, silent issuers, volume drops, registry changes \
and feed outages; their ground truth goes to ground_truth.json.
    """
    settings = load_settings()
    try:
        run_simulate(
            settings, console, scale=scale, start=start, days=days, end=end, seed=seed, scenarios=scenario or [],
            to=to.value, out=out, rate=rate, speed=speed, late_share=late_share, duplicate_share=duplicate_share,
            malformed_share=malformed_share, partition_by=partition_by.value, codec=codec.value, invoices=invoices,
            noise=noise.value, bootstrap=(lambda: resolve_bootstrap(settings)),
        )  # fmt: skip
    except ValueError as exc:
        console.print(f"[red]simulate:[/] {exc}")
        raise typer.Exit(2) from None


def resolve_window(
    scenarios: list[Any], scale: float | None, start: str | None, days: int | None, end: str | None
) -> tuple[float, dt.date, int]:
    """Options first, then the first scenario's ``run`` section, then the defaults."""
    run: dict[str, Any] = {}
    for loaded in scenarios:
        for key, value in loaded.run.items():
            run.setdefault(key, value)
    first = dt.date.fromisoformat(start) if start else _as_date(run.get("start"), DEFAULT_START)
    if end is not None:
        if days is not None:
            raise ValueError("give --days or --end, not both")
        last = dt.date.fromisoformat(end)
        if last < first:
            raise ValueError(f"--end {last} is before the first day {first}")
        days = (last - first).days + 1
    return (
        float(scale if scale is not None else run.get("scale", DEFAULT_SCALE)),
        first,
        int(days if days is not None else run.get("days", DEFAULT_DAYS)),
    )


def _as_date(value: Any, default: dt.date) -> dt.date:
    if value is None:
        return default
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def run_simulate(
    settings: Settings,
    console: Console,
    *,
    scale: float | None = None,
    start: str | None = None,
    days: int | None = None,
    end: str | None = None,
    seed: int = 1,
    scenarios: list[Path] | None = None,
    to: str = "kafka",
    out: Path | None = None,
    rate: float | None = None,
    speed: float | None = None,
    late_share: float = 0.03,
    duplicate_share: float = 0.02,
    malformed_share: float = 0.01,
    partition_by: str = "day",
    codec: str = "deflate",
    invoices: int | None = None,
    noise: str = "poisson",
    bootstrap: Any = None,
) -> dict[str, Any]:
    """Build the run, write or publish it with a progress bar, write the ground truth; returns a summary."""
    from kafka_io.publish import Pacing
    from simulator.archive import GROUND_TRUTH, ArchiveOptions, write_archive, write_ground_truth
    from simulator.engine import Simulation, SimulationConfig
    from simulator.publish import publish_simulation
    from simulator.scenarios import load_scenario

    loaded = [load_scenario(p) for p in scenarios or []]
    scale_, first, n_days = resolve_window(loaded, scale, start, days, end)
    if to == "files" and (rate is not None or speed is not None):
        raise ValueError("--rate and --speed pace Kafka publishing; files are written as fast as possible")
    config = SimulationConfig(
        scale=scale_, start=first, days=n_days, seed=seed, late_share=late_share, duplicate_share=duplicate_share,
        malformed_share=malformed_share, target_invoices=invoices, scenarios=tuple(p.path for p in loaded),
        noise=noise,
    )  # fmt: skip
    pacing = Pacing(rate=rate, speed=speed)
    out_dir = Path(out) if out is not None else settings.data_dir / "simulate"
    with console.status("building the population"):
        sim = Simulation(config, loaded)
    pop = sim.population
    console.print(
        f"{len(pop):,} businesses ({int(pop.adopter.sum()):,} issuers) in {len(sim.ref.units)} units, "
        f"{config.days} days from {config.start}, scale {config.scale:g}, seed {config.seed}"
        + (f", scenarios: {', '.join(s.path.name for s in loaded)}" if loaded else "")
    )
    started = time.perf_counter()
    with progress_bar(console) as bar:
        task = bar.add_task(f"simulating to {to}", total=sim.expected_records(), rate="")
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done, rate=f"{done / elapsed:,.0f} ev/s")

        if to == "files":
            manifest = write_archive(sim, ArchiveOptions(out_dir, partition_by, codec), advance)
            where = f"{len(manifest['files'])} files in {out_dir}"
        else:
            server = bootstrap() if callable(bootstrap) else bootstrap
            topics = settings.topics
            registered, _sent = publish_simulation(sim, server, topics.registry, topics.invoices, pacing, advance)
            write_ground_truth(sim, out_dir / GROUND_TRUTH)
            where = f"{server}: {registered:,} registrations to {topics.registry}, invoices to {topics.invoices}"
        bar.update(task, completed=done, total=done)
    seconds = time.perf_counter() - started
    stats = sim.stats
    console.print(
        f"{stats.records:,} records ({stats.valid:,} valid, {stats.duplicate:,} duplicates, "
        f"{sum(stats.malformed.values()):,} malformed, {stats.late:,} late) in {seconds:.1f} s "
        f"({stats.records / max(seconds, 1e-9):,.0f} ev/s) → {where}"
    )
    console.print(f"ground truth: {out_dir / GROUND_TRUTH}")
    summary = {"records": stats.records, "seconds": seconds, "out": str(out_dir), "to": to}
    if to == "files":
        summary["manifest"] = str(out_dir / "manifest.json")
    return json.loads(json.dumps(summary))
