"""A training run saved part-way, to be continued later: after a job is stopped or killed, on
another day, or a few minutes of GPU time at a time.

A checkpoint is one .npz of plain arrays (read with allow_pickle=False, so it cannot run code):

    params/NAME   the parameters being trained (float32)
    adam/m/NAME   Adam's moments, and adam/t its step count
    arrays/NAME   anything else the run must not recompute (e.g. the distillation targets' centring)
    rng           the random generator's state, as JSON
    record        settings, iterations done, the log so far, time, the runs that made it, as JSON

Continuing from it repeats what an unbroken run would have done: every random draw and every
update happens as it would have, so on the same machine the parameters come out the same, to
float32 rounding (tests/test_teacher.py checks it).
"""
import json
import os
from dataclasses import dataclass

import numpy as np

from .backend import asnumpy
from .files import atomic_path, read_npz

FORMAT_VERSION = 1


@dataclass
class Run:
    """What load_run returns: host arrays and the JSON parts, decoded."""
    params: dict          # name -> np.ndarray
    adam: dict            # {"t": int, "m": {name: array}, "v": {name: array}}
    rng_state: dict       # numpy's bit_generator.state
    arrays: dict          # name -> np.ndarray
    record: dict


def save_run(path, params, adam, rng, record, arrays=None):
    """Write the run to `path` (.npz) atomically. params, arrays: dicts of host or device arrays;
    adam: an optim.Adam; rng: the np.random.Generator whose draws continue; record: JSON-able."""
    state = adam.state_dict()
    out = {"format_version": np.array(FORMAT_VERSION), "adam/t": np.array(state["t"]),
           "rng": np.array(json.dumps(rng.bit_generator.state)), "record": np.array(json.dumps(record))}
    for prefix, group in (("params/", params), ("adam/m/", state["m"]), ("adam/v/", state["v"]),
                          ("arrays/", arrays or {})):
        out.update({prefix + k: asnumpy(v) for k, v in group.items()})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out)
    return path


def load_run(path):
    """Read a checkpoint written by save_run -> Run. A file that is not one gets a ValueError
    that names it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint: {path}")
    data = read_npz(path, path)
    missing = {"format_version", "adam/t", "rng", "record"} - set(data)
    if missing:
        raise ValueError(f"{path}: not a training checkpoint (no {', '.join(sorted(missing))})")
    if int(data["format_version"]) != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {int(data['format_version'])}, this code "
                         f"reads {FORMAT_VERSION}")

    def group(prefix):
        return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}

    adam = {"t": int(data["adam/t"]), "m": group("adam/m/"), "v": group("adam/v/")}
    return Run(group("params/"), adam, json.loads(str(data["rng"])), group("arrays/"),
               json.loads(str(data["record"])))


def restore(run, params, adam, rng, xp):
    """Put a loaded run's state into a fresh run: the arrays of `params` are overwritten in place
    (so views of them, like a network's own dict, see the change), Adam's state and the random
    generator's are replaced. Every parameter must be there with its shape."""
    if set(run.params) != set(params):
        raise ValueError(f"the checkpoint holds parameters {sorted(run.params)}, this run has "
                         f"{sorted(params)}")
    for name, p in params.items():
        stored = run.params[name]
        if stored.shape != p.shape:
            raise ValueError(f"checkpoint parameter {name!r} has shape {stored.shape}, this run's "
                             f"has {tuple(p.shape)}")
        p[...] = xp.asarray(stored, dtype=p.dtype)
    adam.t = run.adam["t"]
    adam.m = {k: xp.asarray(v) for k, v in run.adam["m"].items()}
    adam.v = {k: xp.asarray(v) for k, v in run.adam["v"].items()}
    rng.bit_generator.state = run.rng_state
