"""Event 1000000, the four channels with the most evidence, a slower schedule: do the
per-channel log-evidences settle?

    python docs/ic/smc_reference/slow_schedule.py PARTICLES SWEEPS ESS_FRACTION SEED
    (this session: 32 2 0.8 1, then 32 2 0.8 2; one JSON line each in slow_schedule.jsonl)
"""

import json
import sys
import time
from pathlib import Path

from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.inference.smc import stratified_smc
from probexec.simulators import TAU_CHANNELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from smc_reference import LATENTS, describe

ev, P, moves, frac, seed = 1000000, int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
names = ["pi pi0 nu", "e nu nu", "3pi pi0 nu", "3pi nu"]
with remote_pool("tau_decay_coarse", workers=2) as pool:
    t = sample_prior(pool, 1, seed=ev, mode="stream", progress=False)
    obs = {"calorimeter": t.values_of("calorimeter")[0]}
    t0 = time.time()
    post = stratified_smc(
        pool,
        P,
        obs,
        "channel",
        values=[float(TAU_CHANNELS.index(n)) for n in names],
        moves=moves,
        ess_fraction=frac,
        latents=LATENTS,
        seed=seed,
        progress=False,
    )
    d = describe(post) | {"seed": seed, "particles": P, "moves": moves, "ess_fraction": frac, "event": ev}
    print(json.dumps(d, default=float), flush=True)
    print(
        {
            c: (round(s["log_evidence"], 2), s["stages"], round(s["probability"], 3))
            for c, s in d["strata"].items()
        },
        f"{time.time() - t0:.0f}s",
        file=sys.stderr,
    )
