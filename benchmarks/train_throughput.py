"""Training throughput of the engine's train step (examples/s).

The S2 setting of the multi-modal thesis / BigEarthNet: 120x120x12 patches,
ResNet-50 (and ResNet-18; standard stem, as BigEarthNet models use at 120
px) -> hash head (K = 64) with triplet (batch-all) +
push + bit-balance losses and Adam, the exact `train.make_train_step` the
trainer jits, batch sharded over all local devices. Data are random arrays
already on device, so this measures the step, not the input pipeline
(see benchmarks/data_throughput.py for that).

  python benchmarks/train_throughput.py [--backbones resnet50,resnet18]
      [--batch_size 32] [--steps 5] [--out benchmarks/results/NAME]

Prints a markdown table and writes NAME.md / NAME.json.
"""
import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import ml_collections
import numpy as np

from rs_jax import losses
from rs_jax import optimizers
from rs_jax import sharding
from rs_jax import train


def model_config(backbone, bits):
  return ml_collections.ConfigDict(dict(
      backbone=backbone, bits=bits, width=64, small_inputs=False,
      head_hidden=(1024, 512), frozen=False))


def measure(backbone, *, batch_size, steps, bits=64, size=120, bands=12):
  config = ml_collections.ConfigDict(dict(model=model_config(backbone, bits)))
  shapes = {"s2": (size, size, bands)}
  models = train.create_models(config, shapes)
  tx, schedule = optimizers.create_optimizer(ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=1e-4)), 1000)
  loss_fn = losses.combine({"triplet_mined": 1.0, "push": 0.001,
                            "bit_balance": 1.0})
  variables = train.init_variables(models, shapes, seed=0)
  params = {m: v["params"] for m, v in variables.items()}
  mesh = sharding.create_mesh()
  replicated = sharding.replicated(mesh)
  sharded = sharding.batch_sharded(mesh)
  state = jax.device_put({
      "step": jnp.zeros((), jnp.int32), "params": params,
      "batch_stats": {m: v["batch_stats"] for m, v in variables.items()},
      "opt_state": tx.init(params)}, replicated)
  step = jax.jit(train.make_train_step(models, tx, schedule, loss_fn, {},
                                       label_key="labels", sampler="random"),
                 in_shardings=(replicated, sharded),
                 out_shardings=(replicated, replicated), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = jax.device_put({
      "s2": rng.normal(size=(batch_size, *shapes["s2"])).astype(np.float32),
      "labels": (rng.random((batch_size, 19)) < 0.15).astype(np.uint8)},
                         sharded)
  t0 = time.perf_counter()
  state, out = step(state, batch)
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, out = step(state, batch)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - t0) / steps
  return dict(backbone=backbone, batch_size=batch_size, steps=steps,
              seconds_per_step=seconds, examples_per_s=batch_size / seconds,
              first_step_s=compile_s,
              params=sum(x.size for x in jax.tree.leaves(params)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--backbones", default="resnet50,resnet18")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--out", default="benchmarks/results/train_throughput_"
                      f"{jax.default_backend()}")
  args = parser.parse_args()
  device = jax.devices()[0]
  rows = [measure(b, batch_size=args.batch_size, steps=args.steps)
          for b in args.backbones.split(",")]
  header = (f"Train step, S2 120x120x12 -> hash head K=64, triplet + push + "
            f"balance, Adam; {jax.device_count()} x {device.device_kind} "
            f"({platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs), jax {jax.__version__}")
  lines = [header, "", "| backbone | params | batch | s/step | examples/s |"
           " first step (compile) s |", "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['backbone']} | {r['params'] / 1e6:.1f}M | "
                 f"{r['batch_size']} | {r['seconds_per_step']:.3f} | "
                 f"{r['examples_per_s']:.1f} | {r['first_step_s']:.1f} |")
  command = "python " + " ".join(sys.argv)
  lines += ["", f"Command: `{command}`"]
  table = "\n".join(lines)
  print(table)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out + ".md", "w") as f:
    f.write(table + "\n")
  with open(args.out + ".json", "w") as f:
    json.dump(dict(command=command, device=str(device), rows=rows), f,
              indent=2)


if __name__ == "__main__":
  main()
