"""Retrieval demo on generated codes: prototype codes with bit noise ->
packed uint32 codes -> exact Hamming top-k -> retrieval metrics, in one
compiled step. Writes WORKDIR/metrics.json."""
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
from absl import logging

from rs_jax import hashing
from rs_jax import metrics


def generate_codes(key, *, num_items, num_classes, bits, flip_prob):
  """uint8[N, bits] codes and int32[N] labels: each item is its class
  prototype with every bit flipped independently with `flip_prob`."""
  k_proto, k_label, k_flip = jax.random.split(key, 3)
  protos = jax.random.bernoulli(k_proto, 0.5, (num_classes, bits))
  labels = jax.random.randint(k_label, (num_items,), 0, num_classes)
  flips = jax.random.bernoulli(k_flip, flip_prob, (num_items, bits))
  return (protos[labels] ^ flips).astype(jnp.uint8), labels.astype(jnp.int32)


def run(config, workdir):
  bits, labels = generate_codes(
      jax.random.key(config.seed), bits=config.model.bits, **config.data)
  codes = hashing.pack_bits(bits)
  nq = config.eval.num_queries
  # Queries are archive items 0..nq-1; exclude_self drops each one itself.
  evaluate = jax.jit(functools.partial(
      metrics.retrieval_metrics, ks=tuple(config.eval.ks), exclude_self=True))
  args = (codes[:nq], labels[:nq], codes, labels)
  jax.block_until_ready(evaluate(*args))  # compile
  start = time.perf_counter()
  results = jax.block_until_ready(evaluate(*args))
  seconds = time.perf_counter() - start
  results = {f"test/{k}": float(v) for k, v in sorted(results.items())}
  results["test/seconds_per_query"] = seconds / nq
  logging.info("%d queries x %d codes of %d bits in %.3f s",
               nq, codes.shape[0], config.model.bits, seconds)
  for name, value in results.items():
    print(f"{name:32s} {value:.4f}")
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results
