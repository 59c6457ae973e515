"""Renders a few tau decay events as the calorimeter sees them: three projections per event
(x-y summed over depth, x-z and y-z), the decay channel in the title.

    python examples/render_tau_events.py [NUM_EVENTS] [OUTPUT.png]
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import probexec
from probexec.inference.prior import sample_prior
from probexec.simulators import TAU_CHANNELS


def main(n: str = "4", output: str = "docs/tau_events.png") -> None:
    events = int(n)
    info = probexec.get_simulator("tau_decay")
    with probexec.RemoteModel("tau_decay") as model:
        batch = sample_prior(model, events, seed=7, mode="stream")
    # The noiseless deposit: the mean of the observed image's distribution. (event, z, y, x)
    images = batch.means_of("calorimeter").reshape(events, *info.observed["calorimeter"])
    channel = batch.values_of("channel").astype(int)
    visible = batch.values_of("visible_energy")
    fig, axes = plt.subplots(events, 3, figsize=(10, 3.1 * events), squeeze=False)
    extent_xy, extent_z = (-3, 3, -3, 3), (4, 15)
    for k in range(events):
        img = images[k]
        panels = [
            (img.sum(axis=0), extent_xy, "x", "y"),
            (img.sum(axis=1), (-3, 3, *extent_z), "x", "depth z"),
            (img.sum(axis=2), (-3, 3, *extent_z), "y", "depth z"),
        ]
        for ax, (proj, extent, xl, yl) in zip(axes[k], panels, strict=True):
            shown = np.log10(proj + 1e-4)
            ax.imshow(shown, origin="lower", extent=extent, aspect="auto", cmap="inferno", vmin=-4)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
        axes[k][0].set_title(
            f"event {k}: tau -> {TAU_CHANNELS[channel[k]]}, visible {visible[k]:.1f} GeV, deposited {img.sum():.1f} GeV",
            loc="left",
            fontsize=10,
        )
    fig.suptitle(
        "probexec tau_decay: calorimeter deposits (log10 GeV per voxel, summed along the third axis)"
    )
    fig.tight_layout()
    fig.savefig(output, dpi=80)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(*sys.argv[1:])
