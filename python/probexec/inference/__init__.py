"""Inference engines. Each is a combination of handlers run over a model (or a pool of them).

- `prior.sample_prior`: prior traces, streamed or per draw;
- `importance.importance_sampling`: the prior as proposal, likelihood weights;
- `rmh.rmh`: single-site random-walk Metropolis–Hastings, exact for changing trace structure;
- `smc.smc`: a particle population tempered from the prior to the posterior with RMH moves, for
  posteriors whose modes trap single chains; it also estimates the evidence;
- `strata.stratified`: any of those that estimates the evidence (is, smc, ic), once per value of
  a discrete latent, combined by evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probexec.inference.importance import importance_sampling
from probexec.inference.pool import ModelPool, PoolExhaustedError, remote_pool
from probexec.inference.prior import sample_prior
from probexec.inference.result import Posterior
from probexec.inference.rmh import rmh
from probexec.inference.smc import smc, stratified_smc
from probexec.inference.strata import DEFAULT_KEEP_NATS, stratified, stratum_values

ENGINES = ("is", "rmh", "smc")


def run_engine(
    target: Any, engine: str, num_traces: int, observe: Mapping[str, Any], **options: Any
) -> Posterior:
    """`engine` over `target`; `stratify=NAME` or `(NAME, values)` runs it once per value of that
    discrete latent, combined by evidence (`strata.py`: is, smc), `num_traces` a value; with
    `stratify_pilot=P` each value gets P first and the rest go where the pilot found mass, over
    the values within `stratify_keep` nats (default 10) of the best pilot evidence."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    stratum = options.pop("stratify", None)
    pilot = options.pop("stratify_pilot", 0)
    keep = options.pop("stratify_keep", DEFAULT_KEEP_NATS)
    if pilot and not stratum:
        raise ValueError("stratify_pilot is the pilot of a stratified run: give stratify too")
    if stratum:
        name, values = stratum if isinstance(stratum, tuple) else (stratum, None)
        if engine == "smc":
            return stratified_smc(
                target, num_traces, observe, name, values=values, pilot=pilot, keep_nats=keep, **options
            )
        if engine == "is":
            seed = options.pop("seed", None)
            return stratified(
                lambda obs, s, n: importance_sampling(target, n, obs, seed=s, **options),
                observe,
                name,
                values,
                num_traces=num_traces,
                pilot=pilot,
                keep_nats=keep,
                engine="is",
                target=target,
                seed=seed,
                latents=options.get("latents"),
            )
        raise ValueError(
            f"stratifying combines each value's run by its evidence, which {engine} does not estimate: "
            "use it with is, smc or ic"
        )
    if engine == "is":
        return importance_sampling(target, num_traces, observe, **options)
    if engine == "rmh":
        return rmh(target, num_traces, observe, **options)
    return smc(target, num_traces, observe, **options)


__all__ = [
    "ENGINES",
    "ModelPool",
    "PoolExhaustedError",
    "Posterior",
    "importance_sampling",
    "remote_pool",
    "rmh",
    "run_engine",
    "sample_prior",
    "smc",
    "stratified",
    "stratified_smc",
    "stratum_values",
]
