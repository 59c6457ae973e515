"""Run by `torchrun --nproc_per_node 2` in test_ic.py: one distributed gradient step, gradients
written by rank 0, to compare with one process computing the same mean."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import distributed as dist

from probexec.data import TraceDataset, minibatches
from probexec.nn.training import _all_reduce_gradients, build_network, init_distributed, prepare


def first_batches(ds: TraceDataset, rank: int, world: int):
    return next(
        iter(minibatches(ds.iter_groups(), 32, rng=np.random.default_rng(0), rank=rank, world_size=world))
    )


def network(ds: TraceDataset):
    torch.manual_seed(0)
    sample = list(minibatches(ds.iter_groups(), 32, rng=np.random.default_rng(0)))[:4]
    return build_network(ds.simulator, sample, [t.layout for t in ds.trace_types().values()])


def main() -> None:
    data, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    rank, world = init_distributed("cpu")
    ds = TraceDataset(data)
    net = network(ds)
    g = first_batches(ds, rank, world)
    b = prepare(g, np.random.default_rng(rank))
    net.loss(g.layout, b.values, b.params, b.observations).backward()
    _all_reduce_gradients(net, world)
    if rank == 0:
        torch.save({n: p.grad for n, p in net.named_parameters()}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
