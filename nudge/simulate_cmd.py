"""``nudge simulate``: run a policy against a scenario's ground truth and report what it earned.

Registered in ``nudge/cli.py`` as ``app.command("simulate")(simulate)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimizer.scenario import load_scenario
from optimizer.simulate import POLICIES, Comparison, compare, seed_rows, write_regret_png


def simulate(
    scenario: Annotated[
        Path,
        typer.Option(
            "--scenario",
            help="Scenario JSON file, or the name of a shipped one (apparel, electronics, ...).",
        ),
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help=f"One of {', '.join(POLICIES)}, a comma-separated list, or 'all'.",
        ),
    ] = "thompson",
    carts: Annotated[int, typer.Option("--carts", min=1, help="Abandoned carts to simulate.")] = (
        50_000
    ),
    seed: Annotated[int, typer.Option("--seed", help="Seed for carts and policies.")] = 7,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            min=1,
            help="Run this many seeds (--seed, --seed + 1, ...) and report each policy's mean "
            "share, its standard error and worst seed, and its difference from the first "
            "policy paired by seed. One run of a learning policy is one draw from a wide "
            "spread; compare policies over several.",
        ),
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the cumulative-regret PNG here."),
    ] = None,
    by_segment: Annotated[
        bool,
        typer.Option(
            "--by-segment",
            help="Also print the achievable uplift and each policy's captured share per segment "
            "(customer type, device, checkout stage, big cart, discount seeker).",
        ),
    ] = False,
) -> None:
    """Simulate abandoned carts under a policy; report profit and share of the achievable uplift.

    The holdout (send nothing) and the oracle (knows the truth) always run too, on the same
    carts: captured share = (profit - holdout) / (oracle - holdout).
    """
    console = Console()
    try:
        world = load_scenario(scenario)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scenario") from exc
    names = list(POLICIES) if policy == "all" else [p.strip() for p in policy.split(",")]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise typer.BadParameter(
            f"unknown policy {', '.join(unknown)}; choose from {', '.join(POLICIES)}",
            param_hint="--policy",
        )
    if seeds > 1 and (out is not None or by_segment):
        raise typer.BadParameter(
            "--out and --by-segment show one run; use them without --seeds", param_hint="--seeds"
        )
    runs = len(set(names) | {"holdout", "oracle"})
    results: list[Comparison] = []
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        label = f"{world.name}: {runs} policies" + (f" x {seeds} seeds" if seeds > 1 else "")
        task = progress.add_task(label, total=carts * runs * seeds)
        for s in range(seed, seed + seeds):
            results.append(
                compare(
                    world,
                    names,
                    n_carts=carts,
                    seed=s,
                    on_progress=lambda n: progress.advance(task, n),
                )
            )
    if seeds > 1:
        title = f"{world.name}: {carts:,} carts, seeds {seed}-{seed + seeds - 1}"
        console.print(_seed_table(seed_rows(results), title))
        return
    result = results[0]
    table = Table(title=f"{world.name}: {carts:,} carts, seed {seed}")
    rows = result.rows()
    for column in rows[0]:
        if column not in ("scenario", "carts"):
            if column == "policy":
                table.add_column(column, no_wrap=True, min_width=14)
            else:
                table.add_column(column, justify="right", overflow="fold")
    for row in rows:
        table.add_row(
            *(_cell(value) for key, value in row.items() if key not in ("scenario", "carts"))
        )
    console.print(table)
    if by_segment:
        console.print(_segment_table(result.segment_rows(), f"{world.name}: share by segment"))
    if out is not None:
        write_regret_png(result, out)
        console.print(f"cumulative regret plot: {out}")


def _seed_table(rows: list[dict[str, Any]], title: str) -> Table:
    """:func:`optimizer.simulate.seed_rows` as a table: means with their standard errors."""
    table = Table(title=title, caption="share captured: mean ± standard error over the seeds")
    table.add_column("policy", no_wrap=True)
    for column in ("share", "worst seed", "last 20%", "vs first (paired)"):
        table.add_column(column, justify="right", no_wrap=True)

    def pm(mean: float, se: float) -> str:
        return f"{mean:+.3f} ± {se:.3f}"

    for row in rows:
        first = row is rows[0]  # the policy the others are compared with
        table.add_row(
            row["policy"],
            pm(row["share"], row["share se"]),
            f"{row['share min']:+.3f}",
            pm(row["share_last20"], row["share_last20 se"]),
            "" if first else pm(row["vs first"], row["vs first se"]),
        )
    return table


def _segment_table(rows: list[dict[str, object]], title: str) -> Table:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(
            column, no_wrap=column == "segment", justify="left" if column == "segment" else "right"
        )
    for row in rows:
        table.add_row(*(_cell(value) for value in row.values()))
    return table


def _cell(value: object) -> str:
    """A table cell: floats to 3 decimals, ints with thousands separators."""
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


if __name__ == "__main__":
    typer.run(simulate)
