"""Inference compilation: proposal networks (`ProposalLSTM`), their heads and observation
embeddings, checkpoints, and training."""

from probexec.nn.checkpoint import (
    LearningRateSchedule,
    NetworkMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from probexec.nn.embeddings import ObservationEmbedding, ObservationSpec
from probexec.nn.network import NetworkConfig, ProposalLSTM
from probexec.nn.proposals import ProposalHead, make_head
from probexec.nn.training import TrainingError, TrainOptions, TrainResult, build_network, train

__all__ = [
    "LearningRateSchedule",
    "NetworkConfig",
    "NetworkMismatchError",
    "ObservationEmbedding",
    "ObservationSpec",
    "ProposalHead",
    "ProposalLSTM",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "build_network",
    "load_checkpoint",
    "make_head",
    "save_checkpoint",
    "train",
]
