"""Latest and best checkpoints with orbax (`CheckpointManager`).

WORKDIR/checkpoints/latest keeps the newest training state (and the input
iterator's state when it has one) for resuming; WORKDIR/checkpoints/best
keeps the state with the highest validation metric for the final test.
orbax writes each step to a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoint intact.
"""
import jax
import orbax.checkpoint as ocp

from rs_jax import paths


def abstract(tree):
  """ShapeDtypeStructs (with shardings) that orbax restores into."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      tree)


def latest_step(workdir) -> int | None:
  """Returns the step of WORKDIR's latest finished checkpoint (None without
  one); reads the directory only (no manager, no cross-process barrier)."""
  directory = paths.resolve(workdir) / "checkpoints" / "latest"
  steps = ocp.utils.checkpoint_steps(directory) if directory.exists() else []
  return max(steps, default=None)


class Checkpoints:
  """Two orbax managers: `latest` (keep 1) and `best` (keep 1 by metric).

  read_only: for readers of another process's run; they never delete or
  write anything (a writer removes the temporary directories that a killed
  save left behind).
  """

  def __init__(self, workdir: str, *, best_metric: str,
               read_only: bool = False):
    root = paths.resolve(workdir) / "checkpoints"
    self.best_metric = best_metric
    common = dict(read_only=read_only, create=not read_only,
                  cleanup_tmp_directories=not read_only,
                  **({"max_to_keep": None, "save_interval_steps": 0}
                     if read_only else {"max_to_keep": 1}))
    # Distinct barrier names: both managers may save one step at once.
    self.latest = ocp.CheckpointManager(
        root / "latest", options=ocp.CheckpointManagerOptions(
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="latest"), **common))
    self.best = ocp.CheckpointManager(
        root / "best", options=ocp.CheckpointManagerOptions(
            best_fn=lambda m: m[best_metric], best_mode="max",
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="best"), **common))

  def save_latest(self, step: int, state, data_state=None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    self.latest.save(step, args=ocp.args.Composite(**items))

  def save_best(self, step: int, state, metrics: dict) -> None:
    metrics = {k: float(v) for k, v in metrics.items()}
    self.best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state)), metrics=metrics)

  def restore_latest(self, state, step=None):
    """-> (state, data_state or None) of `step` (default the latest), or
    None without a checkpoint."""
    step = self.latest.latest_step() if step is None else step
    if step is None:
      return None
    items = {"state": ocp.args.StandardRestore(abstract(state))}
    has_data = "data" in self.latest.item_metadata(step)
    if has_data:
      items["data"] = ocp.args.JsonRestore()
    restored = self.latest.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored["data"] if has_data else None

  def restore_best(self, state, step=None):
    """The state of `step` (default the best by the validation metric), or
    None if none was saved."""
    step = self.best.best_step() if step is None else step
    if step is None:
      return None
    return self.best.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract(state))))["state"]

  def close(self) -> None:
    for manager in (self.latest, self.best):
      manager.wait_until_finished()
      manager.close()
