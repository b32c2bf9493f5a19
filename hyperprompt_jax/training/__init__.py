"""The standalone trainer: train state, optimizers, the train step, evaluation, metric writers, preemption and the train loop."""
