"""How much of the decay angles' gain survives when the LSTM sees its own proposed momenta?

    python docs/ic/order_probe.py --network NET --data HELD [--traces 1000] [--samples 16 64 256]

`probexec evaluate` scores each draw with the trace's own earlier values fed to the LSTM, so the
decay angles (drawn after px, py and pz) are credited as if the momenta were known. At inference
the LSTM is fed the momenta it proposed itself, and those are far from exact. What a proposal
then gives the true angles is their marginal density over the momentum proposal,

    q(angles* | y) = E_{m ~ q(m | y)} q(angles* | y, m),

estimated by the mean over K proposed momenta (a lower bound in expectation, tightening with K).
This prints, per held-out trace, the angles' gain over the prior (nats) with the momenta
(a) true, (b) proposed by the network, (c) drawn from the prior, for each K. The channel and the
other draws before the angles stay at their true values in all three, so only the momenta's
order is measured. The gap between (a) and (b) is what proposing momenta and angles jointly, or
angles first, could recover at most; (c) is what the angle proposals keep without momentum
information.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from probexec.data.dataset import TraceDataset
from probexec.data.layout import TypeGroup, TypeLayout
from probexec.nn import load_checkpoint
from probexec.nn.network import ProposalLSTM
from probexec.trace import score_rows

MOMENTA = ("px", "py", "pz")


def is_angle(name: str) -> bool:
    return name.endswith("/cos_theta") or name.endswith("/phi")


@torch.no_grad()
def angle_log_q(
    net: ProposalLSTM,
    layout: TypeLayout,
    values: torch.Tensor,
    params: torch.Tensor,
    obs_embedding: torch.Tensor,
    momenta: str,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps the LSTM through one trace type's sites as inference does, with the momenta `true`,
    `proposed` (drawn from the network's own heads) or from the `prior`, every other value true.
    Returns log q of the true value at each angle site [angles, B] and of the first split's
    (cos theta, phi) [2, B]."""
    n = len(values)
    vo, po = layout.value_offsets, layout.param_offsets
    state = net.initial_state(n)
    prev = net.start.expand(n, -1)
    angles, first = [], []
    for t, site in enumerate(layout.sites):
        key = site.key
        x = torch.cat([obs_embedding, prev, net.current_input(key, n)], -1)
        out, state = net.step(x, state)
        head = net.heads[key]
        p, v = params[:, po[t] : po[t + 1]], values[:, vo[t] : vo[t + 1]]
        raw = head.raw(out)
        if site.name in MOMENTA and momenta == "proposed":
            v = head.sample(raw, p, gen).reshape(v.shape)
        elif site.name in MOMENTA and momenta == "prior":  # Uniform(low, high)
            u = torch.rand(n, 1, generator=gen, dtype=v.dtype)
            v = p[:, :1] + (p[:, 1:2] - p[:, :1]) * u
        if is_angle(site.name):
            lq = head.log_prob(raw, p, v)
            angles.append(lq)
            if site.name.startswith("decay1/"):
                first.append(lq)
        prev = net.previous_input(key, p, v)
    return torch.stack(angles), torch.stack(first)


def prior_log_p(g: TypeGroup, sites: list[int]) -> np.ndarray:
    """log p of the true value at each of `sites` under its prior [sites, B]."""
    vo, po = g.layout.value_offsets, g.layout.param_offsets
    return np.stack(
        [
            score_rows(
                g.layout.sites[t].dist_type,
                g.values[:, vo[t] : vo[t + 1]].astype(np.float64),
                g.params[:, po[t] : po[t + 1]].astype(np.float64),
            )
            for t in sites
        ]
    )


def log_mean_exp(x: torch.Tensor, k: int) -> torch.Tensor:
    """x [..., k * B] laid out sample-major -> log of the mean over the k samples [..., B]."""
    return torch.logsumexp(x.reshape(*x.shape[:-1], k, -1), -2) - math.log(k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", required=True)
    ap.add_argument("--data", required=True, help="held-out prior traces of tau_decay_coarse")
    ap.add_argument("--traces", type=int, default=1000)
    ap.add_argument("--samples", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = TraceDataset(args.data)
    net, _ = load_checkpoint(args.network, simulator=data.simulator)
    net.eval()
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    modes = [("true", 1)] + [(m, k) for m in ("proposed", "prior") for k in args.samples]
    # Per mode: summed gain over the prior of all angles of a trace, and of decay1's two.
    sums = {f"{m} K={k}": np.zeros(3) for m, k in modes}
    per_trace: dict[str, list[np.ndarray]] = {name: [] for name in sums}
    done = 0
    t0 = time.perf_counter()
    for group in data.iter_groups():
        if done >= args.traces:
            break
        layout = group.layout
        names = [s.name for s in layout.sites]
        if not all(net.known([s.key for s in layout.sites])) or not all(m in names for m in MOMENTA):
            continue
        g = group.rows(0, min(len(group), args.traces - done))
        angle_sites = [t for t, s in enumerate(layout.sites) if is_angle(s.name)]
        first_sites = [t for t in angle_sites if names[t].startswith("decay1/")]

        lp_all, lp_first = prior_log_p(g, angle_sites), prior_log_p(g, first_sites)
        obs = {k: torch.from_numpy(o.draw(rng)) for k, o in g.observations.items()}
        values = torch.from_numpy(np.ascontiguousarray(g.values, dtype=np.float32))
        params = torch.from_numpy(np.ascontiguousarray(g.params, dtype=np.float32))
        emb = net.embed_observations(obs)
        for mode, k in modes:
            rows = []
            for a in range(0, len(g), max(1, 8192 // k)):
                sl = slice(a, min(a + max(1, 8192 // k), len(g)))
                b = sl.stop - sl.start
                rep = lambda x, b=b, sl=sl, k=k: x[sl].repeat(k, 1)  # noqa: E731 - sample-major copies
                la, lf = angle_log_q(net, layout, rep(values), rep(params), rep(emb), mode, gen)
                rows.append(
                    (
                        log_mean_exp(la.sum(0).double(), k),
                        log_mean_exp(lf[0].double(), k),
                        log_mean_exp(lf[1].double(), k),
                    )
                )
            lq_all, lq_cos, lq_phi = (torch.cat([r[i] for r in rows]).numpy() for i in range(3))
            gains = np.stack([lq_all - lp_all.sum(0), lq_cos - lp_first[0], lq_phi - lp_first[1]], 1)
            name = f"{mode} K={k}"
            sums[name] += gains.sum(0)
            per_trace[name].append(gains)
        done += len(g)
        print(f"{done} traces ({time.perf_counter() - t0:.0f} s)", flush=True)
    out: dict = {"network": args.network, "data": args.data, "traces": done, "rows": {}}
    print(
        f"\ngain over the prior, nats: all angles per trace; decay1/cos_theta and decay1/phi per draw ({done} traces)"
    )
    print(f"{'momenta':18s} {'all angles':>16s} {'decay1 cos':>16s} {'decay1 phi':>16s}")
    for name, s in sums.items():
        g = np.concatenate(per_trace[name])
        se = g.std(0, ddof=1) / math.sqrt(len(g))
        mean = s / done
        out["rows"][name] = {
            "all_angles": mean[0], "all_angles_se": se[0],
            "decay1_cos_theta": mean[1], "decay1_cos_theta_se": se[1],
            "decay1_phi": mean[2], "decay1_phi_se": se[2],
        }  # fmt: skip
        print(f"{name:18s} " + " ".join(f"{m:+8.3f} ± {e:5.3f}" for m, e in zip(mean, se, strict=True)))
    # Paired against the true momenta: the same traces, so the difference's own error.
    base = np.concatenate(per_trace["true K=1"])
    print("\nminus true momenta (paired)")
    for name in sums:
        if name == "true K=1":
            continue
        d = np.concatenate(per_trace[name]) - base
        se = d.std(0, ddof=1) / math.sqrt(len(d))
        out["rows"][name]["minus_true"] = d.mean(0).tolist()
        out["rows"][name]["minus_true_se"] = se.tolist()
        print(f"{name:18s} " + " ".join(f"{m:+8.3f} ± {e:5.3f}" for m, e in zip(d.mean(0), se, strict=True)))
    out["seconds"] = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
