"""The analytics report: every analysis over every input, written as CSV files, figures, Graphviz
graphs and one self-contained HTML page.

`analyse` streams one source through the accumulators (address table, trace types, transition
graph, and for posteriors the latent chains) in bounded memory; `write_report` lays the results
out. The first input that is not a posterior is the *reference* (normally the prior): posteriors
are compared with it address by address.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probexec.analytics import html as H
from probexec.analytics import plots
from probexec.analytics.addresses import AddressStats
from probexec.analytics.diagnostics import (
    LatentValues,
    autocorrelation,
    importance_diagnostics,
    mcmc_diagnostics,
    read_training_log,
    split_chains,
    training_summary,
)
from probexec.analytics.graph import TransitionGraph, dot_available, render
from probexec.analytics.interesting import rank_addresses, sample_of
from probexec.analytics.reservoir import DEFAULT_CAPACITY
from probexec.analytics.sbc import SBCResult
from probexec.analytics.sources import TraceSource
from probexec.analytics.tracetypes import TraceTypeStats
from probexec.trace import SAMPLE


@dataclass
class Analysis:
    """What one pass over a source found."""

    source: TraceSource
    addresses: AddressStats
    types: TraceTypeStats
    graph: TransitionGraph
    latents: LatentValues | None = None
    log_weights: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_traces(self) -> int:
        return self.addresses.num_traces

    def label_of(self, address_id: int) -> str:
        s = self.addresses.by_id.get(address_id)
        return s.label if s else f"{address_id:016x}"


def analyse(
    source: TraceSource,
    *,
    reservoir_capacity: int = DEFAULT_CAPACITY,
    max_types: int = 100_000,
    latents: list[str] | None = None,
    progress: bool | None = None,
    binary: str | None = None,
) -> Analysis:
    """One streaming pass over `source`. For posteriors, the named latents' values (all of them,
    in order) and the log-weights are kept too: chain diagnostics need them, and a posterior is
    small enough to be held anyway."""
    from tqdm import tqdm

    is_posterior = source.engine is not None
    a = Analysis(source, AddressStats(reservoir_capacity), TraceTypeStats(max_types), TransitionGraph())
    total = source.num_traces
    bar = tqdm(
        total=total,
        desc=f"analytics {source.label}",
        unit="trace",
        disable=not (progress if progress is not None else (total or 0) >= 100_000),
    )
    t0 = time.perf_counter()
    try:
        for chunk in source.chunks():
            if is_posterior and a.latents is None:
                names = latents or _latent_names(source, chunk.batch)
                a.latents = LatentValues(names)
            a.addresses.update(chunk)
            a.types.update(chunk)
            a.graph.update(chunk)
            if a.latents is not None:
                a.latents.update(chunk)
            if is_posterior:
                n = chunk.batch.num_traces
                a.log_weights.append(chunk.log_weights if chunk.log_weights is not None else np.zeros(n))
            bar.update(chunk.batch.num_traces)
    finally:
        bar.close()
    a.seconds = time.perf_counter() - t0
    if binary:
        a.addresses.resolve_sources(binary)
    a.addresses.summaries()  # settles the labels of addresses that share a name
    return a


def _latent_names(source: TraceSource, batch: Any) -> list[str]:
    names = source.stats.get("latents")
    if isinstance(names, dict | list) and names:
        return [str(n) for n in names]
    return batch.addresses.names(kind=SAMPLE)


def short_function(fn: str) -> str:
    """`ns::f(std::vector<double> const&, int) [clone .constprop.0]` -> `ns::f(…)`: the argument
    list is in the CSV; the HTML table stays readable."""
    fn = re.sub(r" \[clone [^\]]*\]", "", fn)
    if not fn.endswith(")"):
        return fn
    depth = 0
    for i in range(len(fn) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(fn[i], 0)
        if depth == 0:
            return fn[:i] + ("(…)" if i < len(fn) - 2 else "()")
    return fn


def _display(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the HTML tables: file paths relative to the sources' common directory, functions
    without their argument lists."""
    files = [str(r["file_line"]).rpartition(":")[0] for r in rows if r.get("file_line")]
    prefix = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0]) if files else ""
    if prefix and not prefix.endswith("/"):
        prefix = os.path.dirname(prefix) + "/" if len(set(files)) == 1 else prefix + "/"
    out = []
    for r in rows:
        d = dict(r)
        if d.get("file_line") and prefix:
            d["file_line"] = str(d["file_line"]).removeprefix(prefix)
        if d.get("function"):
            d["function"] = short_function(str(d["function"]))
        out.append(d)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "x"


@dataclass
class ReportOptions:
    top_types: int = 20
    type_graphs: int = 3
    histograms: int = 12
    address_rows: int = 200
    min_edge_per_trace: float = 0.0
    truth: dict[str, float] = field(default_factory=dict)
    training_log: str | None = None
    sbc: SBCResult | None = None


def write_report(analyses: list[Analysis], output: str | Path, options: ReportOptions | None = None) -> Path:
    """Writes `index.html`, CSV files of every table, figures and graphs into `output`; returns
    the path of the page."""
    opt = options or ReportOptions()
    out = Path(output)
    (out / "csv").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "graphs").mkdir(parents=True, exist_ok=True)
    page = H.Page("probexec analytics")
    summary: dict[str, Any] = {"inputs": []}
    reference = next((a for a in analyses if a.source.engine is None), None)

    page.h(2, "Inputs")
    rows = []
    for a in analyses:
        rows.append(
            {
                "label": a.source.label,
                "kind": a.source.kind,
                "engine": a.source.engine or "",
                "path": a.source.path,
                "traces": a.num_traces,
                "addresses": len(a.addresses.by_id),
                "trace_types": len(a.types.types),
                "analysis_seconds": a.seconds,
                "traces_per_s": a.num_traces / a.seconds if a.seconds > 0 else math.nan,
            }
        )
    page.raw(H.table(rows))
    H.write_csv(rows, out / "csv" / "inputs.csv")
    summary["inputs"] = rows

    for a in analyses:
        full = a is reference or reference is None
        summary[a.source.label] = _structure_section(page, a, out, opt, full)

    posteriors = [a for a in analyses if a.source.engine is not None]
    if reference is not None and posteriors:
        summary["informative"] = _informative_section(page, reference, posteriors, out, opt)
    if posteriors:
        summary["diagnostics"] = _diagnostics_section(page, posteriors, out)
    if opt.training_log:
        summary["training"] = _training_section(page, Path(opt.training_log), out)
    if opt.sbc is not None:
        summary["sbc"] = _sbc_section(page, opt.sbc, out)

    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return page.write(out / "index.html")


def _json_default(v: Any) -> Any:
    if isinstance(v, np.integer | np.floating):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# --- sections ---------------------------------------------------------------------------------
def _structure_section(
    page: H.Page, a: Analysis, out: Path, opt: ReportOptions, full: bool
) -> dict[str, Any]:
    label = a.source.label
    slug = _slug(label)
    page.h(2, f"Structure: {label}")
    lm = a.types.length_moments()
    types_rows, tail = a.types.table(a.label_of, opt.top_types)
    loops = a.graph.cycles()
    page.p(
        f"{a.num_traces} traces, {len(a.addresses.by_id)} addresses, {len(a.types.types)} trace types; "
        f"trace length {lm['mean_length']:.2f} ± {lm['std_length']:.2f} draws "
        f"({lm['min_length']}–{lm['max_length']}), controlled {lm['mean_controlled_length']:.2f} "
        f"({lm['min_controlled_length']}–{lm['max_controlled_length']}); {len(loops)} loop(s) in the transition graph."
    )
    address_rows = a.addresses.table()
    H.write_csv(address_rows, out / "csv" / f"addresses_{slug}.csv")
    page.h(3, "Addresses")
    page.p(
        "count: draws over all traces (a counted row of uncontrolled draws stands for many); per_trace: "
        "count / traces; trace_fraction: traces the address occurs in. file_line is the sample/observe "
        "call in the C++ source (innermost frame), stack the whole call stack.",
        note=True,
    )
    cols = [c for c in address_rows[0] if c not in ("stack", "id", "name")] if address_rows else None
    page.raw(H.table(_display(address_rows), cols, limit=opt.address_rows))

    H.write_csv(types_rows, out / "csv" / f"trace_types_{slug}.csv")
    page.h(3, "Trace types")
    page.raw(H.table(types_rows))
    page.p(
        f"Long tail: {tail['other_types']} other types hold {tail['other_traces']} traces "
        f"({100 * tail['other_frequency']:.2f} %); {tail['types_with_one_trace']} types were seen once"
        + (
            f"; {tail['not_kept']} traces of types beyond the first {a.types.max_types} were counted only"
            if tail["not_kept"]
            else ""
        )
        + ".",
        note=True,
    )
    lengths = a.types.length_table()
    H.write_csv(lengths, out / "csv" / f"trace_lengths_{slug}.csv")
    result: dict[str, Any] = {
        "traces": a.num_traces,
        "addresses": len(a.addresses.by_id),
        "trace_types": len(a.types.types),
        "lengths": lm,
        "long_tail": tail,
        "loops": [[a.label_of(i) for i in loop] for loop in loops],
        "top_types": types_rows[:5],
    }
    if not full:
        return result
    fig = plots.length_distribution(
        lengths, f"Trace lengths: {label}", out / "figures" / f"lengths_{slug}.png"
    )
    page.raw(H.image(fig, "trace-length distribution (all and controlled draws)"))

    page.h(3, "Address transition graph")
    if loops:
        page.p("Loops: " + "; ".join(" ↔ ".join(a.label_of(i) for i in loop) for loop in loops))
    edges = a.graph.table(a.label_of)
    H.write_csv(edges, out / "csv" / f"transitions_{slug}.csv")
    graphs = [("all", a.graph, f"all {a.num_traces} traces")]
    for t in a.types.ranked()[: opt.type_graphs]:
        g = TransitionGraph.of_sequence(t.sequence, t.count, a.graph.node_ids)
        graphs.append((f"type_{t.hash:016x}"[:13], g, f"trace type {t.hash:016x} ({t.count} traces)"))
    rendered = []
    for name, g, title in graphs:
        dot = out / "graphs" / f"graph_{slug}_{name}.dot"
        dot.write_text(
            g.to_dot(a.addresses.by_id, f"{label}: {title}", opt.min_edge_per_trace if name == "all" else 0.0)
        )
        files = render(dot)
        rendered.append(str(dot.relative_to(out)))
        svg = next((f for f in files if f.suffix == ".svg"), None)
        if svg is not None:
            page.raw(H.image(svg, title, css_class="graph"))
        else:
            page.p(
                f"{dot.name}: Graphviz (dot) is not installed, so the graph is only written as .dot",
                note=True,
            )
    page.p(
        "Blue: controlled samples; grey: uncontrolled; orange: replaced (rejection-loop) draws; red: observations; "
        "green: tags. Node: draws per trace and C++ line; edge: transitions per trace.",
        note=True,
    )
    result["graphs"] = rendered
    result["graphviz"] = dot_available()
    return result


def _informative_section(
    page: H.Page, reference: Analysis, posteriors: list[Analysis], out: Path, opt: ReportOptions
) -> dict[str, Any]:
    page.h(2, "Informative addresses")
    page.p(
        f"Addresses ranked by the Jensen–Shannon divergence (bits, 0–1) between their distribution in "
        f"'{reference.source.label}' and in each posterior, counting 'the address did not occur' as a value; "
        "KL is KL(posterior ‖ reference) in nats with half a count added per reference bin. For inference "
        "compilation, proposal_js_bits compares the unweighted IC traces (the learned proposal) with the reference.",
        note=True,
    )
    result: dict[str, Any] = {}
    for post in posteriors:
        ranked = rank_addresses(reference.addresses, post.addresses, post.source.engine)
        slug = _slug(post.source.label)
        H.write_csv(ranked, out / "csv" / f"informative_{slug}.csv")
        page.h(3, f"{post.source.label} vs {reference.source.label}")
        cols = [
            c
            for c in (
                "rank",
                "label",
                "kind",
                "file_line",
                "function",
                "prior_fraction",
                "posterior_fraction",
                "prior_mean",
                "posterior_mean",
                "js_bits",
                "js_values_bits",
                "kl_posterior_prior_nats",
                "proposal_js_bits",
            )
            if ranked and c in ranked[0]
        ]
        page.raw(H.table(_display(ranked), cols, limit=25))
        result[post.source.label] = ranked[:10]
    # Histograms: the named latents first, then the most informative addresses of the first posterior.
    first = rank_addresses(reference.addresses, posteriors[0].addresses, posteriors[0].source.engine)
    chosen: list[str] = []
    for a in (reference, *posteriors):
        if a.latents is not None:
            chosen += [n for n in a.latents.names if n not in chosen]
    by_label = {s.label: s for s in reference.addresses.by_id.values()}
    for r in first:
        if len(chosen) >= opt.histograms:
            break
        if r["label"] not in chosen and r["label"] in by_label:
            chosen.append(r["label"])
    page.h(3, "Distributions per address")
    figs = []
    for lab in chosen[: max(opt.histograms, 1)]:
        s_ref = by_label.get(lab)
        if s_ref is None:
            continue
        series = []
        v, lw, _ = sample_of(reference.addresses, s_ref)
        series.append((reference.source.label, v, lw))
        for p in posteriors:
            sp = p.addresses.by_id.get(s_ref.id)
            pv, plw, _ = sample_of(p.addresses, sp)
            series.append((p.source.label, pv, plw))
            if p.source.engine == "ic" and sp is not None:
                qv, _, _ = sample_of(p.addresses, sp, weighted=False)
                series.append((f"{p.source.label} proposal", qv, None))
        truth = opt.truth.get(s_ref.name) if s_ref.name else None
        path = out / "figures" / f"hist_{_slug(lab)}.png"
        figs.append(
            H.image(
                plots.value_histograms(lab, series, path, s_ref.discrete, truth, s_ref.location.short),
                f"{lab} ({s_ref.location.file_line or 'explicit address'})",
            )
        )
    page.raw("".join(figs))
    return result


def _diagnostics_section(page: H.Page, posteriors: list[Analysis], out: Path) -> dict[str, Any]:
    page.h(2, "Inference diagnostics")
    result: dict[str, Any] = {}
    for p in posteriors:
        label, slug = p.source.label, _slug(p.source.label)
        engine = p.source.engine
        page.h(3, f"{label} ({engine})")
        if engine == "rmh":
            chains = int(p.source.stats.get("chains", 1))
            values = p.latents.values() if p.latents else {}
            values = {k: v for k, v in values.items() if not np.isnan(v).any()}
            try:
                rows = mcmc_diagnostics(values, chains)
            except ValueError as e:
                page.p(f"no chain diagnostics: {e}", note=True)
                continue
            H.write_csv(rows, out / "csv" / f"mcmc_{slug}.csv")
            page.p(
                f"{chains} chains; acceptance rate {p.source.stats.get('acceptance_rate', math.nan):.3f}. "
                "R̂ is split-R̂ (close to 1 when the chains agree), ESS the autocorrelation effective sample size.",
                note=True,
            )
            page.raw(H.table(rows))
            acfs = {n: autocorrelation(split_chains(v, chains)) for n, v in list(values.items())[:8]}
            if acfs:
                page.raw(
                    H.image(
                        plots.autocorrelations(
                            acfs, f"{label}: autocorrelation", out / "figures" / f"acf_{slug}.png"
                        )
                    )
                )
            for n, v in list(values.items())[:4]:
                page.raw(
                    H.image(
                        plots.chain_traces(v, chains, n, out / "figures" / f"chains_{slug}_{_slug(n)}.png")
                    )
                )
            result[label] = rows
        else:
            lw = np.concatenate(p.log_weights) if p.log_weights else np.zeros(0)
            d = importance_diagnostics(lw)
            H.write_csv([d], out / "csv" / f"weights_{slug}.csv")
            page.p(
                "ESS is Kish's effective sample size of the normalised weights; max_weight the largest "
                "single trace's share of the posterior mass.",
                note=True,
            )
            page.raw(H.table([d]))
            page.raw(
                H.image(plots.log_weights(lw, f"{label}: weights", out / "figures" / f"weights_{slug}.png"))
            )
            result[label] = d
    return result


def _training_section(page: H.Page, path: Path, out: Path) -> dict[str, Any]:
    log = read_training_log(path)
    s = training_summary(log)
    page.h(2, "IC training")
    page.raw(H.table([s]))
    page.raw(H.image(plots.training_curves(log, out / "figures" / "training.png"), f"from {path.name}"))
    return s


def _sbc_section(page: H.Page, sbc: SBCResult, out: Path) -> dict[str, Any]:
    page.h(2, f"Simulation-based calibration ({sbc.engine})")
    u = sbc.uniformity()
    rows = [{"latent": n, **v} for n, v in u.items()]
    H.write_csv(rows, out / "csv" / "sbc.csv")
    page.p(
        "Rank of the true value among L posterior draws, over simulated observations: uniform when the "
        "engine is calibrated; the grey band is where a uniform bin falls 99 % of the time.",
        note=True,
    )
    page.raw(H.table(rows))
    bins = rows[0]["bins"] if rows else 10
    page.raw(
        H.image(
            plots.sbc_ranks(
                sbc.ranks, sbc.num_draws, int(bins), f"SBC ranks ({sbc.engine})", out / "figures" / "sbc.png"
            )
        )
    )
    return {"uniformity": u}
