"""The address transition graph: which address follows which, how often, START to END.

Nodes are addresses; an edge a → b counts the traces' consecutive draws at a then b, with START
before each trace's first draw and END after its last. A rejection loop (Marsaglia's polar method,
Breit–Wigner mass sampling) shows as a cycle. Per chunk the edges are counted with one `np.unique`
over (from, to) codes; the state holds one counter per distinct edge.

Output is Graphviz: a `.dot` file (always) and SVG/PNG rendered by `dot` when Graphviz is
installed. Node colours: controlled samples blue, uncontrolled samples grey, replaced (rejection
loop) draws orange, observations red, tags green.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from probexec.analytics.addresses import AddressSummary
from probexec.analytics.sources import Chunk

START, END = -1, -2
KIND_COLOURS = {
    "controlled": "#9ecae1",
    "uncontrolled": "#d9d9d9",
    "replaced": "#fdae6b",
    "observed": "#fc9272",
    "tagged": "#a1d99b",
}


class TransitionGraph:
    def __init__(self) -> None:
        self.node_ids: list[int] = []  # dense index -> address id
        self._index: dict[int, int] = {}
        self.edges: dict[tuple[int, int], int] = {}  # (from, to) dense indices (START/END < 0)
        self.num_traces = 0

    def _dense(self, address_id: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(address_id, return_inverse=True)
        local = np.empty(len(uniq), np.int64)
        for k, a in enumerate(uniq.tolist()):
            i = self._index.get(a)
            if i is None:
                i = self._index[a] = len(self.node_ids)
                self.node_ids.append(a)
            local[k] = i
        return local[inv.ravel()]

    def update(self, chunk: Chunk) -> None:
        b = chunk.batch
        n = b.num_traces
        if n == 0:
            return
        self.num_traces += n
        idx = self._dense(b.address_id)
        starts, ends = b.trace_offsets[:-1], b.trace_offsets[1:]
        nonempty = ends > starts
        dst = np.empty_like(idx)
        dst[:-1] = idx[1:]
        if len(dst):
            dst[ends[nonempty] - 1] = END  # a trace's last draw goes to END
        src = np.concatenate(
            [np.full(int(nonempty.sum()), START), idx, np.full(int((~nonempty).sum()), START)]
        )
        dst = np.concatenate([idx[starts[nonempty]], dst, np.full(int((~nonempty).sum()), END)])
        width = len(self.node_ids) + 2
        codes = (src + 2) * width + (dst + 2)
        uniq, counts = np.unique(codes, return_counts=True)
        for code, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            key = (code // width - 2, code % width - 2)
            self.edges[key] = self.edges.get(key, 0) + c

    @classmethod
    def of_sequence(cls, sequence: np.ndarray, count: int, node_ids: list[int]) -> TransitionGraph:
        """The graph of `count` traces that all follow one address sequence (a trace type)."""
        g = cls()
        g.node_ids = list(node_ids)
        g._index = {a: i for i, a in enumerate(node_ids)}
        g.num_traces = count
        path = [START, *[g._index[int(a)] for a in sequence], END]
        for a, b in itertools.pairwise(path):
            g.edges[(a, b)] = g.edges.get((a, b), 0) + count
        return g

    # --- structure ----------------------------------------------------------------------------
    def successors(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for a, b in self.edges:
            out.setdefault(a, []).append(b)
        return out

    def cycles(self) -> list[list[int]]:
        """Strongly connected components with a cycle (loops in the code), as lists of address
        ids; a self-loop counts. Tarjan's algorithm, iterative (no recursion limit)."""
        succ = self.successors()
        nodes = list(range(len(self.node_ids)))
        index: dict[int, int] = {}
        low: dict[int, int] = {}
        on_stack: set[int] = set()
        stack: list[int] = []
        comps: list[list[int]] = []
        counter = 0
        for root in nodes:
            if root in index:
                continue
            work = [(root, iter(succ.get(root, [])))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                v, it = work[-1]
                advanced = False
                for w in it:
                    if w < 0:
                        continue
                    if w not in index:
                        index[w] = low[w] = counter
                        counter += 1
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(succ.get(w, []))))
                        advanced = True
                        break
                    if w in on_stack:
                        low[v] = min(low[v], index[w])
                if advanced:
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or (v, v) in self.edges:
                        comps.append(sorted(comp))
        return [[self.node_ids[i] for i in comp] for comp in comps]

    def table(self, label: Callable[[int], str]) -> list[dict[str, object]]:
        n = max(self.num_traces, 1)

        def name(i: int) -> str:
            return "START" if i == START else "END" if i == END else label(self.node_ids[i])

        def ident(i: int) -> str:
            return "START" if i == START else "END" if i == END else f"{self.node_ids[i]:016x}"

        rows = [
            {
                "from": name(a),
                "to": name(b),
                "from_id": ident(a),
                "to_id": ident(b),
                "count": c,
                "per_trace": c / n,
            }
            for (a, b), c in self.edges.items()
        ]
        return sorted(rows, key=lambda r: -int(r["count"]))  # type: ignore[call-overload]

    # --- drawing ------------------------------------------------------------------------------
    def to_dot(
        self, summaries: dict[int, AddressSummary], title: str = "", min_per_trace: float = 0.0
    ) -> str:
        """Graphviz text. Edges rarer than `min_per_trace` transitions per trace are left out
        (with their count in the title), so the graph of a large simulator stays readable."""
        n = max(self.num_traces, 1)
        kept = {e: c for e, c in self.edges.items() if c / n >= min_per_trace}
        dropped = len(self.edges) - len(kept)
        used = {i for e in kept for i in e if i >= 0}
        visits: dict[int, int] = {}
        for (_, b), c in self.edges.items():
            visits[b] = visits.get(b, 0) + c
        lines = [
            "digraph transitions {",
            "  rankdir=TB;",
            '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
        ]
        caption = title + (f" ({dropped} edges below {min_per_trace:g}/trace not drawn)" if dropped else "")
        if caption:
            lines.append(f'  label="{_esc(caption)}"; labelloc=t; fontname="Helvetica";')
        lines.append(
            '  START [shape=circle, style=filled, fillcolor="#333333", fontcolor=white, label="START"];'
        )
        lines.append(
            '  END [shape=doublecircle, style=filled, fillcolor="#333333", fontcolor=white, label="END"];'
        )
        for i in sorted(used):
            aid = self.node_ids[i]
            s = summaries.get(aid)
            kind = s.node_kind if s else "uncontrolled"
            text = s.label if s else f"{aid:016x}"
            where = s.location.short if s else ""
            per_trace = visits.get(i, 0) / n
            sub = f"{where}\\n{per_trace:.3g}/trace" if where else f"{per_trace:.3g}/trace"
            lines.append(
                f'  n{i} [label="{_esc(text)}\\n{sub}", fillcolor="{KIND_COLOURS[kind]}", '
                f'tooltip="{_esc(s.location.function if s else "")}"];'
            )
        top = max(kept.values(), default=1)
        for (a, b), c in sorted(kept.items()):
            src = "START" if a == START else f"n{a}"
            dst = "END" if b == END else f"n{b}"
            width = 0.6 + 3.4 * c / top
            lines.append(f'  {src} -> {dst} [label="{c / n:.3g}", penwidth={width:.2f}];')
        lines.append("}")
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render(dot_file: Path, formats: Iterable[str] = ("svg", "png"), timeout: float = 120.0) -> list[Path]:
    """Renders a `.dot` file next to itself with Graphviz; returns the files written (none when
    Graphviz is not installed: the `.dot` is still there to render elsewhere)."""
    if not dot_available():
        return []
    out = []
    for fmt in formats:
        target = dot_file.with_suffix("." + fmt)
        r = subprocess.run(
            ["dot", f"-T{fmt}", str(dot_file), "-o", str(target)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"dot failed on {dot_file}: {r.stderr.strip()}")
        out.append(target)
    return out
