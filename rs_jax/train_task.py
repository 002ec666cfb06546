"""launch.py task "train_task": trains, evaluates and tests hash encoders
(`train.train_and_evaluate`); configs: demo.py, milan_ucm.py, s1s2_*.py."""
from rs_jax import train


def run(config, workdir) -> dict:
  """Runs `train.train_and_evaluate(config, workdir)`; returns its metrics."""
  return train.train_and_evaluate(config, workdir)
