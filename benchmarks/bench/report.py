"""The results: goals, Markdown tables, JSON and charts."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.bench.async_throughput import KEYS as ASYNC_KEYS
from benchmarks.bench.backfill import BACKFILL, READER
from benchmarks.bench.build import BUILD_ALEMBIC
from benchmarks.bench.common import (
    DEFAULT_EF_SEARCH,
    Goal,
    Quantized,
    Queries,
    Results,
    Spread,
    Throughput,
)
from benchmarks.bench.load import COLUMNS, COLUMNS_PSYCOPG3, LISTS, LISTS_PSYCOPG3, NUMPY_ROWS
from benchmarks.bench.quantized import (
    BINARY_INDEX,
    HALFVEC_INDEX,
    KINDS,
    VECTOR_INDEX,
    smallest_oversampling,
)
from benchmarks.bench.query import KEYS, NEAREST
from benchmarks.bench.replica import REPLICA_ROWS
from benchmarks.bench.startup import TEMPLATE

from pgvector_base.search.quantized import DEFAULT_OVERSAMPLING

RECALL_CHART = "recall_latency.png"
THROUGHPUT_CHART = "throughput.png"
QUANTIZED_CHART = "quantized_size_recall.png"


def goals(results: Results) -> list[Goal]:
    """The issue's goals, from the parts this run measured."""
    found: list[Goal] = []
    if results.loads:
        loads = {load.method: load for load in results.loads}
        found += [
            Goal(f"{loads[name].method} over the server's COPY from a file", ratio, target)
            for name, ratio, target in (
                (COLUMNS, loads[COLUMNS].over_file_copy, 0.9),
                (COLUMNS_PSYCOPG3, loads[COLUMNS_PSYCOPG3].over_file_copy, 0.9),
                (NUMPY_ROWS, loads[NUMPY_ROWS].over_file_copy, 0.9),
                (LISTS_PSYCOPG3, loads[LISTS_PSYCOPG3].over_file_copy, 0.8),
            )
        ]
        lists = loads[LISTS].over_psycopg3
        if lists is not None:
            found.append(Goal(f"{LISTS} (psycopg2) over the same through psycopg 3", lists, 0.9))
    alembic = [build.over_tuned for build in results.builds if build.method == BUILD_ALEMBIC]
    if alembic and alembic[0] is not None:
        found.append(
            Goal("HNSW build through alembic upgrade over BuildSettings()", alembic[0], 1.05, True)
        )
    targets = {KEYS: 0.1, NEAREST: 0.3}
    found += [
        Goal(
            f"p50 minus psycopg alone's p50, ms ({step.method}, ef_search = {DEFAULT_EF_SEARCH})",
            step.over_driver_ms,
            targets[step.method],
            at_most=True,
        )
        for step in results.overhead
        if step.method in targets and step.over_driver_ms is not None
    ]
    if results.searches:
        accurate = [query for query in results.searches[1:] if query.recall >= 0.95]
        fastest = max(accurate, key=lambda query: query.speedup, default=None)
        iterative = next(q for q in results.filtered if q.method.endswith("relaxed_order"))
        found += [
            Goal(
                "exact p50 over HNSW p50 at recall >= 0.95"
                + (f" ({fastest.method})" if fastest else " (no ef_search reached it)"),
                single(fastest.speedup if fastest else 0.0),
                20,
            ),
            Goal(f"filtered recall@{results.k}, {iterative.method}", single(iterative.recall), 0.9),
        ]
    four = [t for t in results.throughput if t.clients == 4]
    if four:
        found += [
            Goal("nearest() QPS over pgbench QPS, N = 4", four[0].app_over_pgbench, 0.8),
            Goal("nearest_keys() QPS over pgbench QPS, N = 4", four[0].keys_over_pgbench, 0.9),
        ]
    found += [
        Goal(
            f"async nearest_keys() QPS over raw async psycopg's, N = {t.tasks} tasks",
            t.over_psycopg,
            0.8,
        )
        for t in results.async_throughput
        if t.method == ASYNC_KEYS and t.tasks in (1, 4)
    ]
    refills = {refill.method: refill for refill in results.backfill}
    if refills:
        found += [
            Goal("backfill rows/s over the server's UPDATE ... FROM", refills[BACKFILL].ratio, 0.7),
            Goal("reader p99 during a backfill over before", refills[READER].ratio, 2, True),
        ]
    found += [
        Goal(f"{step.command} over stock Alembic's", step.over_stock, 1.3, at_most=True)
        for step in results.startup
        if step.command == TEMPLATE
    ]
    for data, figures in by_data(results.quantized).items():
        vector = next(q for q in figures if q.index == VECTOR_INDEX)
        # At the template's default oversampling, as a search gets it.
        half = next(
            q
            for q in figures
            if q.index == HALFVEC_INDEX and q.oversampling == DEFAULT_OVERSAMPLING["halfvec"]
        )
        found += [
            Goal(
                f"halfvec index size over the vector index's ({data})",
                single(half.index_mb / vector.index_mb),
                0.55,
                at_most=True,
            ),
            Goal(
                f"halfvec recall@{results.k} minus the vector index's ({data})",
                single(half.recall - vector.recall),
                -0.01,
            ),
        ]
    return found


def single(value: float) -> Spread:
    """A figure measured once, as a spread."""
    return Spread(value, value, value)


def shown(spread: Spread, digits: int = 2) -> str:
    """The median alone when it is the only value, else the median with min and max."""
    if spread.low == spread.high:
        return f"{spread.median:,.{digits}f}"
    return spread.show(digits)


def markdown(results: Results, *, charts: list[str]) -> str:
    """The results as Markdown tables, the charts linked beside them."""
    lines = [
        "# Benchmark results",
        "",
        f"{results.rows:,} rows of {results.dim} dimensions, {results.queries} queries, "
        f"k = {results.k}. Each figure is the median of {results.repeats} runs, min-max in "
        "brackets; a ratio is the median of the ratios of figures measured side by side.",
        "",
        f"Hardware: {results.hardware}.",
        "",
        f"Source: {results.source}.",
        "",
        f"Load average (1, 5, 15 min) at the start: {results.load_average[0]}; "
        f"at the end: {results.load_average[-1]}.",
    ]
    if results.loads:
        lines += [
            "",
            "| Loading | Rows | Seconds | Rows/s | / COPY from a file | / INSERT ... SELECT "
            "| psycopg2 / psycopg 3 |",
            "|---|--:|--:|--:|--:|--:|--:|",
            *(
                f"| {load.method} | {load.rows:,} | {load.seconds.show()} | "
                f"{load.rows_per_second:,.0f} | {load.over_file_copy.show()} | "
                f"{load.over_insert_select.show()} | "
                + ("" if load.over_psycopg3 is None else load.over_psycopg3.show())
                + " |"
                for load in results.loads
            ),
        ]
    if results.builds:
        lines += [
            "",
            "| Building the HNSW index | Settings | Seconds | / BuildSettings() |",
            "|---|---|--:|--:|",
            *(
                f"| {build.method} | {build.settings} | {build.seconds.show(1)} | "
                + ("" if build.over_tuned is None else build.over_tuned.show())
                + " |"
                for build in results.builds
            ),
        ]
    lines += queries_tables(results)
    if results.overhead:
        lines += [
            "",
            f"| One query's time (HNSW, ef_search = {DEFAULT_EF_SEARCH}) | p50 ms "
            "| minus execution p50, ms | minus psycopg alone's p50, ms |",
            "|---|--:|--:|--:|",
            *(
                f"| {step.method} | {step.p50_ms.show()} | "
                + ("" if step.over_execution_ms is None else step.over_execution_ms.show())
                + " | "
                + ("" if step.over_driver_ms is None else step.over_driver_ms.show())
                + " |"
                for step in results.overhead
            ),
        ]
    lines += throughput_table("Clients", results.throughput)
    if results.async_throughput:
        lines += [
            "",
            "| Async tasks, one process, a session per request (HNSW, ef_search = "
            f"{DEFAULT_EF_SEARCH}) | QPS | p50 / p95 / p99 ms | / raw async psycopg "
            "| / pgbench -M prepared |",
            "|---|--:|--:|--:|--:|",
            *(
                f"| {t.tasks} tasks: {t.method} | {t.qps.show(0)} | {milliseconds(t.ms)} "
                f"| {t.over_psycopg.show()} | {t.over_pgbench.show()} |"
                for t in results.async_throughput
            ),
        ]
    if results.replica:
        lines += [
            "",
            "| Searches marked as replica reads, "
            f"{REPLICA_ROWS:,} rows (HNSW, ef_search = {DEFAULT_EF_SEARCH}) "
            "| primary alone | routed to its replica | replica / primary |",
            "|---|--:|--:|--:|",
            *(
                f"| {r.figure} | {r.primary.show(2 if 'ms' in r.figure else 0)} "
                f"| {r.replica.show(2 if 'ms' in r.figure else 0)} "
                f"| {r.replica_over_primary.show()} |"
                for r in results.replica
            ),
            "",
            "The replica runs on the same cores as the primary: on a 2-core machine it adds no "
            "capacity, and these figures show the cost of routing alone.",
        ]
    if results.prepared:
        lines += [
            "",
            "| Session per request, prepared statements (HNSW, ef_search = "
            f"{DEFAULT_EF_SEARCH}) | session ends with | prepared off, ms | prepared on "
            "(after 5 runs), ms | on - off, ms |",
            "|---|---|--:|--:|--:|",
            *(
                f"| {p.request} | {p.end} | {p.off_ms.show(3)} | {p.on_ms.show(3)} "
                f"| {p.on_minus_off_ms.show(3)} |"
                for p in results.prepared
            ),
        ]
    lines += hybrid_table(results)
    if results.scaling:
        lines += [
            "",
            "| Rows (scaling) | Load s | Load µs/row | HNSW build s | Build µs/row | Index MB "
            f"| nearest() p50 ms (ef_search = {DEFAULT_EF_SEARCH}) | Recall@{results.k} |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|",
            *(
                f"| {s.rows:,} | {s.load_seconds.show()} | "
                f"{1e6 * s.load_seconds.median / s.rows:.1f} | {s.build_seconds.show(1)} | "
                f"{1e6 * s.build_seconds.median / s.rows:.0f} | {s.index_mb:,.0f} | "
                f"{s.p50_ms.show()} | {s.recall:.3f} |"
                for s in results.scaling
            ),
        ]
    if results.backfill:
        *fills, reader = results.backfill
        lines += [
            "",
            "| Filling a new embedding column | Rows/s | / server's UPDATE ... FROM |",
            "|---|--:|--:|",
            *(f"| {f.method} | {f.value.show(0)} | {f.ratio.show()} |" for f in fills),
            "",
            "| Reader during a backfill | before | during | during / before |",
            "|---|--:|--:|--:|",
            f"| {reader.method} | {reader.before.show() if reader.before else ''} "
            f"| {reader.value.show()} | {reader.ratio.show()} |",
        ]
    lines += quantized_table(results)
    if results.tenants:
        lines += [
            "",
            f"| Tenant (share of rows) | Rows | Served by | p50 ms | Recall@{results.k} |",
            "|--:|--:|---|--:|--:|",
            *(
                f"| {t.share:.1%} | {t.rows:,} | {t.strategy} | {t.p50_ms.show()} "
                f"| {t.recall:.3f} |"
                for t in results.tenants
            ),
        ]
    if results.startup:
        lines += [
            "",
            "| Start-up (a new process) | Seconds | / stock Alembic |",
            "|---|--:|--:|",
            *(
                f"| {s.command} | {s.seconds.show()} | {s.over_stock.show()} |"
                for s in results.startup
            ),
        ]
    if results.goals:
        lines += [
            "",
            "| Goal | Measured | Target | |",
            "|---|--:|--:|---|",
            *(
                f"| {goal.name} | {shown(goal.value)} | {'<=' if goal.at_most else '>='} "
                f"{goal.target:g} | {'PASS' if goal.passed else 'FAIL'} |"
                for goal in results.goals
            ),
        ]
    lines += [line for chart in charts for line in ("", f"![{chart}]({chart})")]
    return "\n".join(lines) + "\n"


def queries_tables(results: Results) -> list[str]:
    """The latency and recall tables, unfiltered and filtered."""
    lines: list[str] = []
    for title, queries in (
        ("Queries", results.searches),
        ("Filtered, 10% match", results.filtered),
    ):
        if not queries:
            continue
        lines += [
            "",
            f"| {title} | p50 ms | p95 ms | p99 ms | Recall@{results.k} | Exact p50 / p50 "
            "| Server p50 ms | Exact / server p50 |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
            *(
                f"| {q.method} | {q.p50_ms:.2f} | {q.p95_ms:.2f} | {q.p99_ms:.2f} | "
                f"{q.recall:.3f} | {q.speedup:.1f} | {q.server_p50_ms:.2f} | "
                f"{q.server_speedup:.1f} |"
                for q in queries
            ),
        ]
    return lines


def hybrid_table(results: Results) -> list[str]:
    """Hybrid search's p50 beside the vector-only search's, on the data it ran on."""
    run = results.hybrid
    if run is None:
        return []
    return [
        "",
        f"| Hybrid search, {run.rows:,} documents, k = {results.k} (HNSW, GIN) | p50 ms "
        "| / vector-only p50 |",
        "|---|--:|--:|",
        *(
            f"| {h.method} | {h.p50_ms.show()} | "
            + ("" if h.over_vector is None else h.over_vector.show())
            + " |"
            for h in run.latencies
        ),
        "",
        f"Data: {run.data}. A query is two words, either to match (median: {run.matches:,.0f} "
        "documents match), and their mean vector; a depth of 40 is one round trip, a depth of "
        "100 sets ef_search = 100 in a savepoint.",
    ]


def throughput_table(title: str, rows: list[Throughput]) -> list[str]:
    """QPS and latency of ``nearest``, ``nearest_keys`` and pgbench by client count."""
    if not rows:
        return []
    return [
        "",
        f"| {title} (HNSW, ef_search = {DEFAULT_EF_SEARCH}) | nearest QPS "
        "| p50 / p95 / p99 ms | nearest_keys QPS | p50 / p95 / p99 ms "
        "| pgbench QPS | p50 / p95 / p99 ms | nearest / pgbench | nearest_keys / pgbench |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        *(
            f"| {t.clients} | {t.app_qps.show(0)} | {milliseconds(t.app_ms)} "
            f"| {t.keys_qps.show(0)} | {milliseconds(t.keys_ms)} "
            f"| {t.pgbench_qps.show(0)} | {milliseconds(t.pgbench_ms)} "
            f"| {t.app_over_pgbench.show()} | {t.keys_over_pgbench.show()} |"
            for t in rows
        ),
    ]


def milliseconds(cuts: tuple[float, float, float]) -> str:
    """p50 / p95 / p99."""
    return " / ".join(f"{cut:.2f}" for cut in cuts)


def serialized(results: Results) -> dict[str, Any]:
    """The results as JSON-ready data, each goal with whether it passed."""
    data = asdict(results)
    data["goals"] = [{**asdict(goal), "passed": goal.passed} for goal in results.goals]
    return data


def draw_charts(results: Results, directory: Path) -> list[str]:
    """Write the charts this run has data for into ``directory``; return their file names."""
    # Agg draws to files without a display; imported here, as only a run that writes needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    written = []
    if results.searches:
        figure, axes = plt.subplots(figsize=(8, 5), layout="constrained")
        # Filtered points are labelled above, the others below, as their latencies are close.
        for label, queries, marker, line, offset in (
            ("no filter: HNSW by ef_search", results.searches, "o", "-", -12),
            ("filter matching 10%: HNSW by iterative_scan", results.filtered, "s", "", 5),
        ):
            exact, *indexed = queries
            drawn = axes.plot(
                [q.p50_ms for q in indexed],
                [q.recall for q in indexed],
                marker=marker,
                linestyle=line,
                label=label,
            )
            axes.plot(
                exact.p50_ms,
                exact.recall,
                marker="*",
                markersize=12,
                color=drawn[0].get_color(),
                linestyle="",
                label=f"{label.split(':')[0]}: exact scan",
            )
            for q in queries:
                axes.annotate(
                    point_label(q),
                    (q.p50_ms, q.recall),
                    textcoords="offset points",
                    xytext=(6, offset),
                    fontsize=8,
                )
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        axes.xaxis.set_minor_formatter(ticker.NullFormatter())
        axes.set_xlabel("p50 latency as the application sees it, ms (log scale)")
        axes.set_ylabel(f"recall@{results.k} against the exact scan")
        axes.set_title(
            f"Recall against latency: {results.rows:,} rows x {results.dim}, k = {results.k}"
        )
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="lower right")
        figure.savefig(directory / RECALL_CHART, dpi=100)
        plt.close(figure)
        written.append(RECALL_CHART)
    if results.throughput:
        figure, axes = plt.subplots(figsize=(8, 5), layout="constrained")
        clients = [t.clients for t in results.throughput]
        for label, spreads in (
            ("VectorSearch.nearest()", [t.app_qps for t in results.throughput]),
            ("VectorSearch.nearest_keys()", [t.keys_qps for t in results.throughput]),
            ("pgbench, same SQL (the server's bound)", [t.pgbench_qps for t in results.throughput]),
        ):
            medians = [s.median for s in spreads]
            axes.errorbar(
                clients,
                medians,
                yerr=[
                    [m - s.low for m, s in zip(medians, spreads, strict=True)],
                    [s.high - m for m, s in zip(medians, spreads, strict=True)],
                ],
                marker="o",
                capsize=4,
                label=label,
            )
        axes.set_xscale("log", base=2)
        axes.set_xticks(clients, [str(n) for n in clients])
        axes.xaxis.set_minor_locator(ticker.NullLocator())
        axes.set_ylim(bottom=0)
        axes.set_xlabel("client processes (N)")
        axes.set_ylabel("queries per second (median, bars: min-max)")
        axes.set_title(
            f"Throughput, HNSW at ef_search = {DEFAULT_EF_SEARCH}: "
            f"{results.rows:,} rows x {results.dim}, k = {results.k}"
        )
        axes.grid(True, alpha=0.3)
        axes.legend(loc="lower right")
        figure.savefig(directory / THROUGHPUT_CHART, dpi=100)
        plt.close(figure)
        written.append(THROUGHPUT_CHART)
    if results.quantized:
        draw_size_against_recall(results, directory / QUANTIZED_CHART)
        written.append(QUANTIZED_CHART)
    return written


def by_data(figures: list[Quantized]) -> dict[str, list[Quantized]]:
    """The quantized part's figures by data set, in the order measured."""
    grouped: dict[str, list[Quantized]] = {}
    for figure in figures:
        grouped.setdefault(figure.data, []).append(figure)
    return grouped


def quantized_table(results: Results) -> list[str]:
    """The quantized part: a table per data set, and the oversampling each kind needs."""
    lines: list[str] = []
    sample = min(results.queries, results.rows)
    for data, figures in by_data(results.quantized).items():
        vector_mb = next(q.index_mb for q in figures if q.index == VECTOR_INDEX)
        lines += [
            "",
            f"| Quantized index, {data} (recall by measure_recall over {sample} stored rows) "
            "| Index MB | / vector's | Build s | nearest_keys() p50 ms (ef_search "
            f"= {DEFAULT_EF_SEARCH}) | Recall@{results.k} |",
            "|---|--:|--:|--:|--:|--:|",
            *(
                f"| {q.kind} | {q.index_mb:,.1f} | {q.index_mb / vector_mb:.2f} | "
                f"{q.build_seconds.show(1)} | {q.p50_ms.show()} | {q.recall:.3f} |"
                for q in figures
            ),
            "",
        ]
        for index in (HALFVEC_INDEX, BINARY_INDEX):
            tried = [q for q in figures if q.index == index]
            smallest = smallest_oversampling(figures, index)
            lines.append(
                f"{KINDS[index]} reaches recall@{results.k} >= 0.95 from {smallest}x oversampling."
                if smallest
                else f"{KINDS[index]} stays below recall@{results.k} 0.95: {tried[-1].recall:.3f} "
                f"at {tried[-1].oversampling}x, the largest tried."
            )
    if results.quantized_missing:
        lines += ["", f"No real vectors: {results.quantized_missing}."]
    return lines


def point_label(queries: Queries) -> str:
    """A point's short name: "exact", the ef_search or the iterative scan mode."""
    if "=" not in queries.method:
        return "exact"
    name, value = queries.method.removeprefix("HNSW, ").split(" = ")
    return value if name == "iterative_scan" else f"ef {value}"


def draw_size_against_recall(results: Results, path: Path) -> None:
    """The quantized part's chart: each index kind's size against its recall."""
    import matplotlib.pyplot as plt  # after draw_charts chose the Agg backend

    figure, axes = plt.subplots(figsize=(8, 5), layout="constrained")
    for (data, figures), marker in zip(by_data(results.quantized).items(), "os", strict=False):
        axes.plot(
            [q.index_mb for q in figures],
            [q.recall for q in figures],
            marker=marker,
            linestyle="",
            label=data.split(" (")[0],  # without the package's name and version
        )
        # The halfvec points coincide (the same index, the same recall): one label for them.
        labels = {
            (q.index_mb, q.recall): (
                f"binary {q.oversampling}x" if q.index == BINARY_INDEX else q.index.split("_")[-1]
            )
            for q in reversed(figures)
        }
        for point, label in labels.items():
            axes.annotate(label, point, textcoords="offset points", xytext=(6, -4), fontsize=8)
    axes.set_xlim(left=0)
    axes.set_xlabel("index size, MB")
    axes.set_ylabel(f"recall@{results.k} (measure_recall)")
    axes.set_title(f"Index size against recall, ef_search = {DEFAULT_EF_SEARCH}, k = {results.k}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="center right")
    figure.savefig(path, dpi=100)
    plt.close(figure)
