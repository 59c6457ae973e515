"""Address-based trace analytics and inference diagnostics: what a simulator does, back to the
C++ line.

- `sources`: every input (trace files, datasets, posteriors, a simulator run) as chunks of traces;
- `addresses`, `tracetypes`, `graph`: the address table, trace types and lengths, the transition
  graph, each folded over chunks in bounded memory;
- `location`: function and file:line of an address;
- `divergence`, `interesting`: which addresses inference moved most (prior vs posterior, IC
  proposal vs prior);
- `diagnostics`, `sbc`: R̂, ESS and autocorrelation, importance weights, IC training curves,
  simulation-based calibration;
- `report`, `plots`, `html`, `cli`: the report (`probexec analytics ... -o DIR`).
"""

from probexec.analytics.addresses import AddressStats, AddressSummary
from probexec.analytics.divergence import jensen_shannon, kl_divergence
from probexec.analytics.graph import TransitionGraph
from probexec.analytics.location import Location, locate, resolve_missing
from probexec.analytics.report import Analysis, ReportOptions, analyse, write_report
from probexec.analytics.sbc import SBCResult, simulation_based_calibration
from probexec.analytics.sources import Chunk, TraceSource, open_source
from probexec.analytics.tracetypes import TraceTypeStats

__all__ = [
    "AddressStats",
    "AddressSummary",
    "Analysis",
    "Chunk",
    "Location",
    "ReportOptions",
    "SBCResult",
    "TraceSource",
    "TraceTypeStats",
    "TransitionGraph",
    "analyse",
    "jensen_shannon",
    "kl_divergence",
    "locate",
    "open_source",
    "resolve_missing",
    "simulation_based_calibration",
    "write_report",
]
