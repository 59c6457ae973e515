"""Why no importance sampler over the controlled draws can reach a useful ESS on `tau_decay` as it
stands: the perfect-proposal test.

    python docs/ic/shower_noise.py [--simulator tau_decay] [--events 4] [--repeats 100] [-o FILE.json]

For each event (seeds 1 000 000, 1 000 001, ...): simulate it, then rerun the simulator `--repeats`
times with *every controlled draw replayed at its true value* (the proposal a perfect network
would make) while the calorimeter's uncontrolled shower draws (the spots) are drawn afresh, and
score the event's own image under each rerun. The importance weight of such a trace is its
likelihood p(y | x, shower), so the spread of log p(y | x, shower) over reruns is the weight noise
that remains with a perfect proposal; its ESS is the best any IC network can do. With
`--simulator tau_decay_fixed_spots` the spots come from a fixed stream, and the spread is zero.
Also: how much log p(y | x) is lost when px alone moves off its true value (the likelihood's
sharpness, which sets how precise a proposal must be).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from probexec.handlers import Condition, PriorProposal, Replay
from probexec.inference.prior import sample_prior
from probexec.remote import RemoteModel
from probexec.simulators import TAU_CHANNELS
from probexec.trace import TraceBatchBuilder

PX_SHIFTS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--simulator",
        default="tau_decay",
        choices=["tau_decay", "tau_decay_fixed_spots", "tau_decay_coarse"],
    )
    p.add_argument("--events", type=int, default=4)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("-o", "--output", default=str(Path(__file__).resolve().parent / "shower_noise.json"))
    args = p.parse_args()
    rows = []
    with RemoteModel(args.simulator) as model:
        for i in range(args.events):
            seed = 1_000_000 + i
            truth = sample_prior(model, 1, seed=seed, mode="per_draw", progress=False)
            image = truth.values_of("calorimeter")[0]
            rng = np.random.default_rng(seed)
            builder = TraceBatchBuilder(model.addresses)
            handlers = [Condition({"calorimeter": image}), Replay(truth), PriorProposal(rng, local=True)]
            for _ in range(args.repeats):
                model.run_trace(handlers, builder, seed=int(rng.integers(2**63)))
            reruns = builder.build()
            assert np.allclose(reruns.values_of("px"), truth.values_of("px")[0]), "replay failed"
            ll = reruns.log_likelihood()
            w = np.exp(ll - ll.max())
            row = {
                "simulator": args.simulator,
                "seed": seed,
                "channel": TAU_CHANNELS[int(truth.values_of("channel")[0])],
                "own_shower_log_lik": float(truth.log_likelihood()[0]),
                "rerun_log_lik_mean": float(ll.mean()),
                "rerun_log_lik_std": float(ll.std()),
                "rerun_log_lik_max": float(ll.max()),
                "perfect_proposal_ess": float(w.sum() ** 2 / (w**2).sum()),
                "repeats": args.repeats,
            }
            # How sharp the likelihood is in px: the loss of log p(y | x) when px alone moves by
            # `shift` GeV (one rerun each; meaningful with fixed spots, noise-dominated without).
            replay = Replay(truth)
            key = next(k for k in replay.values if model.addresses[k[0]].name == "px")
            drops = {}
            for shift in PX_SHIFTS:
                replay.values[key] = truth.values_of("px")[0] + shift
                b = TraceBatchBuilder(model.addresses)
                h = [Condition({"calorimeter": image}), replay, PriorProposal(rng, local=True)]
                model.run_trace(h, b, seed=int(rng.integers(2**63)))
                drops[str(shift)] = float(ll[0] - b.build().log_likelihood()[0])
            row["log_lik_drop_for_px_shift"] = drops
            rows.append(row)
            print(
                f"seed {seed} ({row['channel']}): log p(y | x) with the image's own shower {row['own_shower_log_lik']:.0f}; "
                f"over {args.repeats} fresh showers {row['rerun_log_lik_mean']:.0f} ± {row['rerun_log_lik_std']:.0f} "
                f"(best {row['rerun_log_lik_max']:.0f}); ESS {row['perfect_proposal_ess']:.2f} of {args.repeats}; "
                "log-likelihood lost when px moves by "
                + ", ".join(f"{k} GeV: {v:.0f}" for k, v in drops.items())
            )
    Path(args.output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
