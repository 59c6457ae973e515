"""Prior sampling of a built-in C++ simulator, through both paths.

    python examples/prior_sampling.py [SIMULATOR]

Per-draw control sends every controlled draw to the engine (what inference needs); streaming lets
the simulator draw everything itself and send whole traces (what datasets need). Both give the
same columnar TraceBatch.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import probexec


def main(name: str = "gum") -> None:
    info = probexec.get_simulator(name)
    with probexec.RemoteModel(name) as model:
        for mode, n in (("per_draw", 2_000), ("stream", 100_000)):
            t0 = time.perf_counter()
            batch = model.prior(n, mode=mode, seed=1, observe=info.default_observations)
            secs = time.perf_counter() - t0
            print(
                f"{mode:9s}: {n} traces in {secs:.2f} s ({n / secs:.0f} traces/s), "
                f"{len(set(batch.trace_types()))} trace type(s), {len(batch.addresses)} addresses"
            )
            for latent in info.latents[:3]:
                v = batch.values_of(latent)
                print(f"    {latent}: prior mean {np.nanmean(v):.3f}, std {np.nanstd(v):.3f}")
        trace = batch.trace(0)
        print("first streamed trace:")
        for v in trace.variables:
            print(f"    {v.kind:7s} {v.name or '-':8s} #{v.instance} log_prob {v.log_prob:8.3f}  {v.address}")


if __name__ == "__main__":
    main(*sys.argv[1:])
