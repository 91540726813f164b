"""Trace files: round trip, refusal of malformed files (which stay untouched), replay equal to
direct Array calls, the recorders."""
import hashlib
import json
import zipfile

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import ops


def toy_trace(seed=0):
    rng = np.random.default_rng(seed)
    with acs.trace.record("toy", "tests") as rec:
        ops.linear(rng.standard_normal((4, 16)), rng.standard_normal((8, 16)), rng.standard_normal(8), name="fc")
        ops.conv2d(rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6),
                   stride=2, padding=1, groups=2, name="conv")
        ops.matmul(rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 2)), name="attn")
    rec.trace.task = {"note": "no forward"}
    rec.trace.add_array("task.labels", np.arange(5))
    return rec.trace


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip(tmp_path):
    t = toy_trace()
    path = tmp_path / "t.npz"
    t.save(path)
    u = acs.trace.load(path)
    assert (u.model, u.source, u.task) == ("toy", "tests", {"note": "no forward"})
    assert u.layers == json.loads(json.dumps(t.layers))
    assert set(u.arrays) == set(t.arrays)
    for k in t.arrays:
        assert u.arrays[k].dtype == t.arrays[k].dtype
        assert np.array_equal(u.arrays[k], t.arrays[k])
    # the recorded outputs are the float32 reference ops' results
    fc = u.layer_inputs(u.layers[0])
    assert np.array_equal(u.arrays[u.layers[0]["output"]], ops.linear(fc["x"], fc["w"], fc["bias"]))


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "t.npz"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        toy_trace().save(path)
    assert path.read_bytes() == b"user data"
    toy_trace().save(path, overwrite=True)
    assert acs.trace.load(path).model == "toy"
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary files left


def rewrite(src, dst, edit):
    """Copy the zip src to dst with member contents transformed by edit(name, bytes) -> bytes|None."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)


def npy_bytes(arr, allow_pickle=False):
    import io
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def manifest_edit(change):
    def edit(name, data):
        if name != "manifest.npy":
            return data
        m = json.loads(np.load(__import__("io").BytesIO(data)).tobytes())
        change(m)
        return npy_bytes(np.frombuffer(json.dumps(m).encode(), np.uint8))
    return edit


MALFORMED = {
    "truncated": None,
    "not a zip": None,
    "wrong version": manifest_edit(lambda m: m.update(version=2)),
    "missing key": manifest_edit(lambda m: m["layers"][0]["inputs"].pop("w")),
    "missing array": lambda name, data: None if name == "L0000.w.npy" else data,
    "shape mismatch": lambda name, data: npy_bytes(np.zeros((4, 9), np.float32)) if name == "L0000.output.npy" else data,
    "pickled object": lambda name, data: npy_bytes(np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    if name == "L0000.x.npy" else data,
    "bad op": manifest_edit(lambda m: m["layers"][0].update(op="softmax")),
    "no manifest": lambda name, data: None if name == "manifest.npy" else data,
    "manifest not json": lambda name, data: npy_bytes(np.frombuffer(b"{not json", np.uint8)) if name == "manifest.npy" else data,
    "absurd size": lambda name, data: data.replace(b"(4, 16)", b"(4000000000, 16000)", 1) if name == "L0000.x.npy" else data,
    "integer weights": lambda name, data: npy_bytes(np.zeros((8, 16), np.int32)) if name == "L0000.w.npy" else data,
}
MESSAGES = {
    "truncated": "truncated|corrupt", "not a zip": "not a trace", "wrong version": "version 2",
    "missing key": "missing input 'w'", "missing array": "missing", "shape mismatch": "does not match",
    "pickled object": "objects|pickle", "bad op": "op must be", "no manifest": "no manifest",
    "manifest not json": "not valid JSON", "absurd size": "declares", "integer weights": "float array",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_traces_are_refused_and_left_untouched(tmp_path, case):
    good = tmp_path / "good.npz"
    toy_trace().save(good, compress=False)
    bad = tmp_path / "bad.npz"
    if case == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "not a zip":
        bad.write_bytes(b"\x93NUMPY not a zip at all")
    else:
        rewrite(good, bad, MALFORMED[case])
    before = digest(bad)
    with pytest.raises(ValueError, match=MESSAGES[case]):
        acs.trace.load(bad)
    assert digest(bad) == before


def test_load_names_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such trace file"):
        acs.trace.load(tmp_path / "absent.npz")


def test_replay_equals_direct_array_calls(tmp_path):
    t = toy_trace(1)
    path = tmp_path / "t.npz"
    t.save(path)
    arr = acs.Array(4, 4, "ws", acs.MAC("e4m3fn", "e4m3fn", "bf16"), quant={"a": "tensor", "b": "channel"})
    report = acs.trace.replay(path, arr)
    t = acs.trace.load(path)
    direct = []
    fc, conv, attn = (t.layer_inputs(layer) for layer in t.layers)
    direct.append(arr.linear(fc["x"], fc["w"], bias=fc["bias"]))
    direct.append(arr.conv2d(conv["x"], conv["w"], bias=conv["bias"], **t.layers[1]["attrs"]))
    direct.append(arr.matmul(attn["a"], attn["b"]))
    assert [l["name"] for l in report.layers] == ["fc", "conv", "attn"]
    for layer, res, rec in zip(report.layers, direct, t.layers):
        recorded = t.arrays[rec["output"]].astype(np.float64)
        err = res.output - recorded
        sqnr = 10 * np.log10(np.sum(recorded ** 2) / np.sum(err ** 2))
        assert layer["metrics"]["sqnr_db"] == pytest.approx(sqnr, rel=1e-12)
        assert layer["cycles"] == res.cycles and layer["energy_pj"] == res.energy_pj
    assert report.totals["cycles"] == sum(r.cycles for r in direct)
    assert report.totals["energy_pj"] == pytest.approx(sum(r.energy_pj for r in direct))
    assert json.loads(report.to_json())["layers"][0]["name"] == "fc"


def test_simulate_runs_ops_on_the_array():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((5, 12)), rng.standard_normal((7, 12))
    arr = acs.Array(4, 4, "os", acs.MAC("int8", "int8", "int32"))
    with acs.trace.simulate(arr) as sim:
        y = ops.linear(x, w)
    assert np.array_equal(y, arr.linear(x, w).output.astype(np.float32))
    assert len(sim.results) == 1 and sim.results[0][1].macs == 5 * 7 * 12
    assert np.array_equal(ops.linear(x, w), (x.astype(np.float32) @ w.astype(np.float32).T))


def test_torch_recorder(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 5))
    x = torch.randn(2, 3, 8, 8)
    with acs.trace.record_torch(model, "tiny") as rec:
        y = model(x)
    rec.trace.save(tmp_path / "t.npz")
    t = acs.trace.load(tmp_path / "t.npz")
    assert [(l["name"], l["op"]) for l in t.layers] == [("0", "conv2d"), ("3", "linear")]
    assert np.array_equal(t.arrays[t.layers[1]["output"]], y.detach().numpy())
    conv = t.layer_inputs(t.layers[0])
    ours = ops.conv2d(conv["x"], conv["w"], conv["bias"], **t.layers[0]["attrs"])
    np.testing.assert_allclose(ours, t.arrays[t.layers[0]["output"]], rtol=1e-5, atol=1e-5)  # float32 sums in another order
