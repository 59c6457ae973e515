"""Importance sampling on a built-in simulator, the prior as proposal, over a pool of workers.

    python examples/importance_sampling.py [SIMULATOR] [NUM_TRACES]

Same as `probexec posterior SIM --engine is -n N`.
"""

from __future__ import annotations

import sys

from probexec.inference import importance_sampling, remote_pool
from probexec.simulators import get_simulator


def main(name: str = "gum", n: str = "100000") -> None:
    info = get_simulator(name)
    with remote_pool(name) as pool:  # one simulator process per core
        post = importance_sampling(pool, int(n), info.default_observations, seed=0)
    print(f"{post.num_traces} traces in {post.seconds:.1f} s, ESS {post.ess:.0f}, {post.dropped} dropped")
    for latent in info.latents:
        e = post[latent]
        lo, hi = e.credible_interval(0.9)
        print(f"  {latent}: mean {e.mean:.3f}, std {e.stddev:.3f}, 90% interval [{lo:.3f}, {hi:.3f}]")
    post.save("is_posterior")
    print("saved to is_posterior/ (posterior.npz, summary.json)")


if __name__ == "__main__":
    main(*sys.argv[1:])
