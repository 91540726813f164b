"""Recorded tensor traces of real models: the file format (docs/traces.md), recorders, and
replay through a simulated array.

A trace is one .npz (loaded with allow_pickle=False) holding the arrays and a JSON manifest:
model, source, version, and per layer its op (linear, matmul, conv2d), the keys of its input,
weight, bias and recorded output arrays, and attributes (stride, padding, dilation, groups);
optionally task data for an end-to-end metric."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from accel_sim import layers, ops, overflow as _overflow
from accel_sim._io import atomic_write, jsonable as _jsonable

__all__ = ["Trace", "Report", "load", "record", "record_torch", "simulate", "replay", "VERSION", "MAX_BYTES"]

VERSION = 1
MANIFEST_KEY = "manifest"
MAX_BYTES = 4 << 30  # refuse traces declaring more than this much array data
ROLES = {"linear": ("x", "w"), "matmul": ("a", "b"), "conv2d": ("x", "w")}
OPTIONAL_ROLES = {"linear": ("bias",), "matmul": (), "conv2d": ("bias",)}
CONV_ATTRS = ("stride", "padding", "dilation", "groups")


class Trace:
    """Arrays by key, layers that refer to them, and optional task data."""

    def __init__(self, model: str, source: str = "", layers_=None, arrays=None, task=None):
        for argname, v in (("model", model), ("source", source)):
            if not isinstance(v, str):
                raise TypeError(f"{argname} must be a string, got {type(v).__name__}")
        self.model, self.source = model, source
        self.layers = list(layers_ or [])
        self.arrays = {}
        for key, arr in dict(arrays or {}).items():
            self.add_array(key, arr)
        self.task = dict(task or {})

    def add_array(self, key: str, array) -> str:
        if not isinstance(key, str) or not key or key == MANIFEST_KEY:
            raise ValueError(f"key must be a non-empty string other than {MANIFEST_KEY!r}, got {key!r}")
        arr = np.asarray(array)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"trace arrays must be numeric, got {arr.dtype} for {key!r}")
        self.arrays[key] = arr
        return key

    def _stored(self, key, array) -> str:
        """Store an array, or reuse the key of an identical one already stored (the same
        activations feeding q, k and v, the same weights called twice)."""
        arr = np.asarray(array)
        digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode() + np.ascontiguousarray(arr).tobytes()).digest()
        index = self.__dict__.setdefault("_by_digest", {})
        if digest in index and index[digest] in self.arrays:
            return index[digest]
        index[digest] = self.add_array(key, arr)
        return key

    def add_layer(self, name, op, inputs, output, attrs=None):
        """Record one layer call; inputs maps roles (x/w/bias, a/b) to arrays."""
        i = len(self.layers)
        entry = {"name": name, "op": op, "inputs": {}, "attrs": dict(attrs or {})}
        for role, arr in inputs.items():
            entry["inputs"][role] = self._stored(f"L{i:04d}.{role}", arr)
        entry["output"] = self._stored(f"L{i:04d}.output", output)
        _check_layer(entry, self.arrays, f"layer {i}")
        self.layers.append(entry)
        return entry

    def layer_inputs(self, layer: dict) -> dict:
        return {role: self.arrays[key] for role, key in layer["inputs"].items()}

    def manifest(self) -> dict:
        return {"format": "accel_sim.trace", "version": VERSION, "model": self.model, "source": self.source,
                "layers": self.layers, "task": self.task}

    def save(self, path, overwrite: bool = False, compress: bool = True):
        """Write atomically (a temporary file in the same folder, then a rename); an existing
        file is only replaced with overwrite=True."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        manifest = np.frombuffer(json.dumps(self.manifest()).encode(), dtype=np.uint8)
        save = np.savez_compressed if compress else np.savez
        atomic_write(path, lambda f: save(f, **{MANIFEST_KEY: manifest}, **self.arrays))

    def __repr__(self):
        return f"Trace({self.model!r}, {len(self.layers)} layers, {len(self.arrays)} arrays)"


# -- loading and validation -------------------------------------------------------------------
def _npy_header(zf, info, where):
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except Exception as e:  # numpy raises ValueError and others on corrupt headers
            raise ValueError(f"{where}: {info.filename} is not a valid .npy array ({e})") from None
    if dtype.hasobject:
        raise ValueError(f"{where}: {info.filename} holds Python objects (pickles are refused)")
    return shape, dtype


def load(path, max_bytes: int = MAX_BYTES) -> Trace:
    """Read and validate a trace; nothing is written to the file."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ValueError(f"{where}: no such trace file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{where}: not a trace (.npz) file, or truncated")
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{where}: unexpected member {info.filename!r}")
                shape, dtype = _npy_header(zf, info, where)
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if nbytes > info.file_size:
                    raise ValueError(f"{where}: {info.filename} declares {nbytes} bytes but holds {info.file_size}")
                total += nbytes
                if total > max_bytes:
                    raise ValueError(f"{where}: declares more than {max_bytes} bytes of arrays (max_bytes)")
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"{where}: member {bad} is corrupted (CRC mismatch)")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"{where}: cannot read the trace ({e}); truncated or corrupted?") from None
    if MANIFEST_KEY not in arrays:
        raise ValueError(f"{where}: no manifest; not an accel_sim trace")
    try:
        manifest = json.loads(arrays.pop(MANIFEST_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: the manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "accel_sim.trace":
        raise ValueError(f"{where}: the manifest is not an accel_sim trace manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{where}: trace version {manifest.get('version')!r} is not supported (this reads {VERSION})")
    for key, kind in (("model", str), ("source", str), ("layers", list), ("task", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{where}: manifest {key!r} must be a {kind.__name__}")
    for i, layer in enumerate(manifest["layers"]):
        _check_layer(layer, arrays, f"{where}: layer {i}")
    return Trace(manifest["model"], manifest["source"], manifest["layers"], arrays, manifest["task"])


def _check_layer(layer, arrays, where):
    if not isinstance(layer, dict):
        raise ValueError(f"{where}: must be an object")
    name, op = layer.get("name"), layer.get("op")
    if not isinstance(name, str):
        raise ValueError(f"{where}: 'name' must be a string")
    if op not in ROLES:
        raise ValueError(f"{where} ({name}): op must be one of {sorted(ROLES)}, got {op!r}")
    inputs, attrs = layer.get("inputs"), layer.get("attrs", {})
    if not isinstance(inputs, dict) or not isinstance(attrs, dict):
        raise ValueError(f"{where} ({name}): 'inputs' and 'attrs' must be objects")
    allowed = ROLES[op] + OPTIONAL_ROLES[op]
    for role in ROLES[op]:
        if role not in inputs:
            raise ValueError(f"{where} ({name}): missing input {role!r}")
    for role in list(inputs) + ["output"]:
        key = layer.get("output") if role == "output" else inputs[role]
        if role != "output" and role not in allowed:
            raise ValueError(f"{where} ({name}): unknown input {role!r} for {op}")
        if not isinstance(key, str) or key not in arrays:
            raise ValueError(f"{where} ({name}): the array for {role!r} ({key!r}) is missing")
        if arrays[key].dtype.kind != "f":
            raise ValueError(f"{where} ({name}): {role} must be a float array, got {arrays[key].dtype}")
    shapes = {role: arrays[key].shape for role, key in inputs.items()}
    out = arrays[layer["output"]].shape
    try:
        expected = _output_shape(op, shapes, attrs)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{where} ({name}): {e}") from None
    if tuple(out) != tuple(expected):
        raise ValueError(f"{where} ({name}): output shape {tuple(out)} does not match the inputs' {tuple(expected)}")


def _output_shape(op, s, attrs):
    if op == "linear":
        x, w = s["x"], s["w"]
        if len(w) != 2 or len(x) < 1 or x[-1] != w[1] or ("bias" in s and s["bias"] != (w[0],)):
            raise ValueError(f"shapes x {x}, w {w}{', bias ' + str(s['bias']) if 'bias' in s else ''} do not fit")
        return (*x[:-1], w[0])
    if op == "matmul":
        a, b = s["a"], s["b"]
        if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
            raise ValueError(f"shapes a {a}, b {b} do not multiply")
        return (*np.broadcast_shapes(a[:-2], b[:-2]), a[-2], b[-1])
    x, w = s["x"], s["w"]
    unknown = set(attrs) - set(CONV_ATTRS)
    if unknown:
        raise ValueError(f"unknown conv2d attributes {sorted(unknown)}")
    stride, padding, dilation = (layers.pair(attrs.get(k, d), k) for k, d in
                                 (("stride", 1), ("padding", 0), ("dilation", 1)))
    groups = attrs.get("groups", 1)
    if not isinstance(groups, int) or groups < 1 or len(x) != 4 or len(w) != 4 or x[1] != w[1] * groups \
            or w[0] % groups or ("bias" in s and s["bias"] != (w[0],)):
        raise ValueError(f"shapes x {x}, w {w} with groups={groups} do not fit")
    oh = layers.conv_output_size(x[2], w[2], stride[0], padding[0], dilation[0])
    ow = layers.conv_output_size(x[3], w[3], stride[1], padding[1], dilation[1])
    return (x[0], w[0], oh, ow)


# -- recording and simulating ---------------------------------------------------------------------
class Recorder:
    def __init__(self, model, source):
        self.trace = Trace(model, source)
        self._counts = {}

    def __call__(self, op, name, inputs, attrs, compute):
        output = compute()
        if name is None:
            n = self._counts.get(op, 0)
            self._counts[op] = n + 1
            name = f"{op}_{n}"
        self.trace.add_layer(name, op, {k: np.array(v) for k, v in inputs.items()}, np.array(output), attrs)
        return output


@contextlib.contextmanager
def record(model: str, source: str = ""):
    """Record every acs.ops call (its inputs, weights and float32 output) into rec.trace."""
    rec = Recorder(model, source)
    with ops.handler(rec):
        yield rec


def _run_layer(array, op, inputs, attrs):
    if op == "linear":
        return array.linear(inputs["x"], inputs["w"], bias=inputs.get("bias"))
    if op == "matmul":
        return array.matmul(inputs["a"], inputs["b"])
    return array.conv2d(inputs["x"], inputs["w"], bias=inputs.get("bias"), **attrs)


class Simulator:
    """Runs each acs.ops call on the array; keeps (name, Result) of every call."""

    def __init__(self, array):
        self.array = array
        self.results = []

    def __call__(self, op, name, inputs, attrs, compute):
        res = _run_layer(self.array, op, inputs, attrs)
        self.results.append((name or op, res))
        return res.output.astype(np.float32)


@contextlib.contextmanager
def simulate(array):
    """Run every acs.ops call on `array` (the outputs the hardware would give, as float32)."""
    sim = Simulator(array)
    with ops.handler(sim):
        yield sim


# -- replay --------------------------------------------------------------------------------------
@dataclass
class Report:
    model: str
    layers: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    task: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "layers": self.layers, "totals": self.totals, "task": self.task}

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=2)


def replay(trace, array, task: bool = True, trace_dir=None) -> Report:
    """Run every recorded layer on `array` from its recorded inputs and compare with the
    recorded float32 output; with task=True and a forward module named by the trace (looked
    for in trace_dir, by default the trace file's folder, then the shipped traces/), also the
    end-to-end task metric with every GEMM on the array."""
    from accel_sim._metrics import error_metrics as _error_metrics
    from accel_sim.array import Array
    if isinstance(trace, (str, os.PathLike)):
        trace_dir = trace_dir or Path(trace).parent
        trace = load(trace)
    if not isinstance(trace, Trace):
        raise TypeError(f"trace must be a Trace or a path, got {type(trace).__name__}")
    if not isinstance(array, Array):
        raise TypeError(f"array must be an acs.Array, got {type(array).__name__}")
    report = Report(trace.model)
    totals = {"cycles": 0, "macs": 0, "energy_pj": 0.0, "time_us": 0.0, "energy_breakdown": {}}
    for layer in trace.layers:
        inputs = trace.layer_inputs(layer)
        with warnings.catch_warnings():   # one warning for the whole replay, below
            warnings.simplefilter("ignore", _overflow.AccumulatorOverflowWarning)
            res = _run_layer(array, layer["op"], inputs, layer.get("attrs", {}))
        recorded = trace.arrays[layer["output"]].astype(np.float64)
        m = _error_metrics(res.output, recorded)
        report.layers.append({
            "name": layer["name"], "op": layer["op"],
            "metrics": {"sqnr_db": m["sqnr_db"], "rel_err": m["rel_fro"], "cosine": m["cosine"],
                        "max_abs": m["max_abs"], "nonfinite": m["nonfinite"]},
            "cycles": res.cycles, "macs": res.macs, "utilization": res.utilization,
            "energy_pj": res.energy_pj, "energy_breakdown": dict(res.energy_breakdown),
            "counts": {k: res.counts.get(k, 0) for k in _overflow.COUNT_KEYS}, "overflow": res.overflow,
            "outputs": int(np.size(res.output)),
        })
        totals["cycles"] += res.cycles
        totals["macs"] += res.macs
        totals["energy_pj"] += res.energy_pj
        totals["time_us"] += res.time_us
        for part, v in res.energy_breakdown.items():
            totals["energy_breakdown"][part] = totals["energy_breakdown"].get(part, 0.0) + v
    totals["pj_per_mac"] = totals["energy_pj"] / totals["macs"] if totals["macs"] else 0.0
    sq = [l["metrics"]["sqnr_db"] for l in report.layers]
    totals["sqnr_db_min"] = min(sq) if sq else math.inf
    totals["overflow"] = _overflow.combine([(l["name"], l["overflow"]) for l in report.layers],
                                           outputs=sum(l["outputs"] for l in report.layers))
    report.totals = totals
    if task and trace.task.get("forward"):
        folders = [Path(trace_dir)] if trace_dir else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _overflow.AccumulatorOverflowWarning)
            report.task = _task_metric(trace, array, folders + [_shipped_traces()])
    _overflow.warn(totals["overflow"], stacklevel=3)
    return report


def _shipped_traces() -> Path:
    """traces/ of the project checkout the package runs from (an editable install), else of
    the current folder."""
    beside = Path(__file__).resolve().parents[1] / "traces"
    return beside if beside.is_dir() else Path.cwd() / "traces"


def _task_metric(trace, array, folders):
    """The trace's task metric through its forward module, looked for in `folders` in order
    (the trace's own folder, then the shipped traces/)."""
    name = trace.task["forward"]
    found = [f / name for f in folders if (f / name).is_file()]
    if not isinstance(name, str) or Path(name).name != name or not found:
        return {"skipped": f"no forward module {name!r} in {', '.join(map(str, folders))}"}
    module_file = found[0]
    spec = importlib.util.spec_from_file_location(f"accel_sim_traces_{module_file.stem}", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.evaluate(trace, lambda: simulate(array))


@contextlib.contextmanager
def record_torch(module, model: str, source: str = ""):
    """Record every nn.Linear and nn.Conv2d call inside `module` (PyTorch forward hooks) while
    the context is open; rec.trace is the Trace.  Needs torch (an optional dependency)."""
    try:
        import torch
    except ImportError:
        raise ImportError("record_torch needs PyTorch: pip install torch") from None
    rec = Recorder(model, source)
    handles = []

    def as_np(t):
        return t.detach().to(torch.float32).cpu().numpy()

    def hook(name, kind):
        def fn(mod, args, output):
            x = as_np(args[0])
            inputs = {"x": x, "w": as_np(mod.weight)}
            if mod.bias is not None:
                inputs["bias"] = as_np(mod.bias)
            attrs = {}
            if kind == "conv2d":
                if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                    raise ValueError(f"{name}: only numeric zero padding is recorded, got {mod.padding!r}")
                attrs = {"stride": list(mod.stride), "padding": list(mod.padding),
                         "dilation": list(mod.dilation), "groups": int(mod.groups)}
            rec.trace.add_layer(name, kind, inputs, as_np(output), attrs)
        return fn

    for name, mod in module.named_modules():
        if isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(hook(name or "linear", "linear")))
        elif isinstance(mod, torch.nn.Conv2d):
            handles.append(mod.register_forward_hook(hook(name or "conv2d", "conv2d")))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()
