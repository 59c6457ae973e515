"""Random-walk Metropolis–Hastings: several chains in parallel, convergence checked by R-hat.

    python examples/rmh.py [SIMULATOR] [NUM_SAMPLES]

Same as `probexec posterior SIM --engine rmh -n N --chains 4 --burn-in 500`.
"""

from __future__ import annotations

import sys

from probexec.inference import remote_pool, rmh
from probexec.simulators import get_simulator


def main(name: str = "branching", n: str = "8000") -> None:
    info = get_simulator(name)
    with remote_pool(name, workers=2) as pool:
        post = rmh(
            pool, int(n), info.default_observations, chains=4, burn_in=500, seed=0, latents=list(info.latents)
        )
    print(
        f"{post.num_traces} samples in {post.seconds:.1f} s, acceptance {post.stats['acceptance_rate']:.2f}, "
        f"ESS {post.ess:.0f}"
    )
    for latent in info.latents:
        e = post[latent]
        r_hat = post.stats["r_hat"].get(latent, float("nan"))
        print(f"  {latent}: mean {e.mean:.3f}, std {e.stddev:.3f}, R-hat {r_hat:.3f}")
        if e.is_discrete:
            print(
                "    "
                + ", ".join(
                    f"P({latent}={k}) = {p:.3f}" for k, p in sorted(e.probabilities().items()) if p > 0.01
                )
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
