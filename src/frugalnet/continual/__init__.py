"""Continual learning: task streams, context providers, strategies, metrics and plots (see the `continual` study)."""
from frugalnet.continual.contexts import (CONTEXTS, ContextProvider, OneHotContext, OnlinePrototypeContext,
                                          PrototypeContext, make_context, nearest)
from frugalnet.continual.learner import TrainSetup, evaluate_task, train_joint, train_task
from frugalnet.continual.metrics import (accuracy_curve, average_accuracy, backward_transfer, forgetting,
                                         summarize)
from frugalnet.continual.regularizers import EWC, SI, Regularizer
from frugalnet.continual.streams import PermutedStream, SplitStream, TaskStream, make_stream
from frugalnet.continual.strategies import STRATEGIES, Hyper, Strategy, get_strategy, register_strategy

__all__ = ["CONTEXTS", "ContextProvider", "OneHotContext", "OnlinePrototypeContext", "PrototypeContext",
           "make_context", "nearest", "TrainSetup", "evaluate_task", "train_joint", "train_task",
           "accuracy_curve", "average_accuracy", "backward_transfer", "forgetting", "summarize", "EWC", "SI",
           "Regularizer", "PermutedStream", "SplitStream", "TaskStream", "make_stream", "STRATEGIES", "Hyper",
           "Strategy", "get_strategy", "register_strategy"]
