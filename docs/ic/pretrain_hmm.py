"""Does pretraining the observation embedding help IC on the HMM (16 scalar observations,
17 three-state latents)? IC ESS/N at 1 and 5 epochs on 30 000 prior traces, with and without
500 steps of `--pretrain-embedding` (default latents: every state), 3 IC runs of 1 000 traces
each (the dataset and IC runs as in `tests/test_ic.py`):

    python docs/ic/pretrain_hmm.py --json docs/ic/pretrain_cli/hmm.json
    python docs/ic/pretrain_hmm.py --epochs 5 --train-seeds 1,2 --json docs/ic/pretrain_cli/hmm_seeds.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from probexec.data import DatasetWriter, TraceDataset
from probexec.inference.ic import ic_posterior
from probexec.nn import TrainOptions, train
from probexec.remote import RemoteModel
from probexec.simulators import get_simulator


def ess_over_n(network, seed: int, traces: int = 1000, in_flight: int = 16) -> float:
    models = [RemoteModel("hmm") for _ in range(in_flight)]
    try:
        post = ic_posterior(network, models, traces, get_simulator("hmm").default_observations, seed=seed)
    finally:
        for m in models:
            m.close()
    return post.ess / post.num_traces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/probexec_hmm30k")
    ap.add_argument("--json")
    ap.add_argument("--epochs", default="1,5", help="training lengths, comma-separated")
    ap.add_argument("--train-seeds", default="0", help="training seeds (minibatch order, initial weights)")
    args = ap.parse_args()
    d = Path(args.data)
    if not (d / "dataset.json").exists():
        with RemoteModel("hmm") as m:
            w = DatasetWriter(d, "hmm")
            for i in range(0, 30_000, 10_000):
                w.write(m.stream(10_000, seed=i))
    ds = TraceDataset(d)
    out: dict = {}
    for epochs in (int(e) for e in args.epochs.split(",")):
        for train_seed in (int(s) for s in args.train_seeds.split(",")):
            for pretrain in (0, 500):
                t0 = time.perf_counter()
                opts = TrainOptions(
                    epochs=epochs, batch_size=128, lr=3e-3, cosine=True, progress=False, threads=2,
                    pretrain_steps=pretrain, seed=train_seed,
                )  # fmt: skip
                res = train("hmm", dataset=ds, options=opts)
                ess = [ess_over_n(res.network, seed) for seed in (1, 2, 3)]
                key = f"epochs {epochs}, pretrain {pretrain}" + (f", train seed {train_seed}" if train_seed else "")
                out[key] = {"ess_over_n": ess, "loss": res.final_loss, "seconds": time.perf_counter() - t0}
                print(f"{key}: ESS/N {', '.join(f'{e:.3f}' for e in ess)}, last minibatch loss {res.final_loss:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
