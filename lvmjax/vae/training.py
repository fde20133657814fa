"""The VAE's training steps and evaluation: re-exported from :mod:`lvmjax.vae.steps`.

Kept so that ``from lvmjax.vae import training`` and ``training.make_train_step`` etc. keep
working; the code lives in :mod:`lvmjax.vae.steps`.
"""
from lvmjax.vae.steps import (OBJECTIVES, Objective, TrainState, create_train_state, evaluate,
                              jit_multi_train_step, jit_train_step, make_multi_train_step,
                              make_train_step)

__all__ = ["OBJECTIVES", "Objective", "TrainState", "create_train_state", "make_train_step",
           "jit_train_step", "make_multi_train_step", "jit_multi_train_step", "evaluate"]
