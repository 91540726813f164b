"""SCALE-Sim (v2 / v3) setups: the architecture `.cfg` file and the topology CSVs.

    cfg = load_config("google.cfg")          # ScaleSimConfig
    arr = cfg.to_array(mac)                  # an accel_sim Array of the same shape and memories
    for layer in load_topology("alexnet.csv"):
        M, N, K = layer.gemm_shape()         # A is M x K, B is K x N
        arr.plan_gemm(M, N, K)

Files are only read.  Every problem with a file is a ValueError that names the file, the line
and the field.  The SCALE-Sim facts these readers rely on, with the files they were read from,
are in docs/scalesim.md.
"""
from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field

__all__ = ["ScaleSimConfig", "Layer", "load_config", "load_topology", "output_size",
           "scalesim_output_size", "WORD_BYTES", "DATAFLOWS"]

#: SCALE-Sim's word is one element, and its simulator fixes word_size = 1 byte.
WORD_BYTES = 1
DATAFLOWS = ("os", "ws", "is")

_INT_RE = re.compile(r"[0-9]+")
_RATIO_RE = re.compile(r"([0-9]+)\s*:\s*([0-9]+)")


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------

def _where(fname, lineno=None, fieldname=None):
    parts = [str(fname)]
    if lineno is not None:
        parts.append(f"line {lineno}")
    if fieldname is not None:
        parts.append(fieldname)
    return ": ".join(parts)


def _read_text(path):
    """(display name, text with '\\n' line ends) of a UTF-8 text file (a BOM is dropped)."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    fname = os.fspath(path)
    with open(fname, "rb") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{fname}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    if "\x00" in text:
        raise ValueError(f"{fname}: not a text file (it contains NUL bytes)")
    return fname, text.replace("\r\n", "\n").replace("\r", "\n")


def _positive_int(text, where):
    s = text.strip()
    if not _INT_RE.fullmatch(s):
        raise ValueError(f"{where}: expected a positive integer, got {text!r}")
    v = int(s)
    if v < 1:
        raise ValueError(f"{where}: expected a positive integer, got {text!r}")
    return v


def _check_int_arg(value, argname):
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np
            ok = isinstance(value, np.integer) and not isinstance(value, np.bool_)
        except ImportError:  # pragma: no cover - numpy is a dependency of the package
            ok = False
        if not ok:
            raise TypeError(f"{argname} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{argname} must be a positive integer, got {value}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# output sizes
# ---------------------------------------------------------------------------------------------

def output_size(size, kernel, stride=1):
    """Output length of an unpadded, undilated convolution, PyTorch's rule:
    floor((size - kernel) / stride) + 1.  SCALE-Sim topologies describe the already-padded
    IFMAP, so no padding term appears."""
    size, kernel, stride = (_check_int_arg(size, "size"), _check_int_arg(kernel, "kernel"),
                            _check_int_arg(stride, "stride"))
    if kernel > size:
        raise ValueError(f"kernel ({kernel}) is larger than the input ({size})")
    return (size - kernel) // stride + 1


def scalesim_output_size(size, kernel, stride=1):
    """Output length as SCALE-Sim computes it (topology_utils.py, topo_calc_hyperparams):
    ceil((size - kernel + stride) / stride).  This is one more than output_size() whenever
    stride does not divide size - kernel: SCALE-Sim then places a last window that runs past
    the IFMAP edge (its operand matrix marks those addresses as padding, -1)."""
    size, kernel, stride = (_check_int_arg(size, "size"), _check_int_arg(kernel, "kernel"),
                            _check_int_arg(stride, "stride"))
    if kernel > size:
        raise ValueError(f"kernel ({kernel}) is larger than the input ({size})")
    return -(-(size - kernel + stride) // stride)


_OUTPUT_RULES = {"pytorch": output_size, "scalesim": scalesim_output_size}


# ---------------------------------------------------------------------------------------------
# the architecture file
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScaleSimConfig:
    """A SCALE-Sim architecture: array shape, dataflow, the three SRAMs (kB) and the DRAM
    interface bandwidth (SCALE-Sim words per cycle; None when InterfaceBandwidth is CALC, i.e.
    SCALE-Sim sizes the bandwidth itself so that nothing stalls).  `extra` holds every other
    key of the file as a string, under the key's own spelling (or "section.Key" when the same
    key appears in more than one section)."""

    run_name: str
    rows: int
    cols: int
    dataflow: str
    ifmap_sram_kb: int
    filter_sram_kb: int
    ofmap_sram_kb: int
    bandwidth: int | None = None
    extra: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if not isinstance(self.run_name, str):
            raise TypeError(f"run_name must be a str, got {type(self.run_name).__name__}")
        for argname in ("rows", "cols", "ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb"):
            _check_int_arg(getattr(self, argname), argname)
        if self.bandwidth is not None:
            _check_int_arg(self.bandwidth, "bandwidth")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, got {self.dataflow!r}")
        if not isinstance(self.extra, dict):
            raise TypeError(f"extra must be a dict, got {type(self.extra).__name__}")

    @property
    def sram_kb(self):
        """(ifmap, filter, ofmap) SRAM sizes in kB: accel_sim's (A, B, output) triple."""
        return (self.ifmap_sram_kb, self.filter_sram_kb, self.ofmap_sram_kb)

    @property
    def dram_bytes_per_cycle(self):
        """The bandwidth in bytes per cycle (one byte per SCALE-Sim word), or None (ideal)."""
        return None if self.bandwidth is None else self.bandwidth * WORD_BYTES

    def to_array(self, mac=None, **kwargs):
        """An accel_sim Array with this configuration's shape, dataflow, SRAM sizes and DRAM
        bandwidth.  kwargs go to Array (they may override sram_kb and dram_bytes_per_cycle,
        e.g. dram_bytes_per_cycle=None for ideal memory)."""
        from accel_sim.array import Array
        params = {"sram_kb": self.sram_kb, "dram_bytes_per_cycle": self.dram_bytes_per_cycle}
        params.update(kwargs)
        return Array(rows=self.rows, cols=self.cols, dataflow=self.dataflow, mac=mac, **params)


def _index_options(lines):
    """{(section, lower-case key): (line number, key as spelled)} for the option lines of an
    INI text, following configparser's rules for comments and continuation lines."""
    index = {}
    sections = {}
    section = None
    in_option = False
    option_indent = 0
    for lineno, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(raw) - len(raw.lstrip())
        if in_option and section is not None and indent > option_indent:
            continue  # continuation of the previous value
        m = re.match(r"\[(?P<header>.+)\]", stripped)
        if m:
            section = m.group("header")
            sections.setdefault(section, lineno)
            in_option = False
            continue
        m = re.match(r"(?P<key>.*?)\s*[=:]", stripped)
        if m and section is not None:
            key = m.group("key").strip()
            index.setdefault((section, key.lower()), (lineno, key))
            in_option, option_indent = True, indent
    return index, sections


# SCALE-Sim v1 (ARM-software/SCALE-Sim) spellings, for a hint when a v2 key is missing.
_V1_KEYS = {"ifmapsramszkb": "IfmapSramSz", "filtersramszkb": "FilterSramSz",
            "ofmapsramszkb": "OfmapSramSz"}


def load_config(path) -> ScaleSimConfig:
    """Read a SCALE-Sim v2/v3 architecture file (INI).  Keys are case-insensitive and take
    ':' or '=' (configparser, as SCALE-Sim reads them).  Required: [general] run_name;
    [architecture_presets] ArrayHeight, ArrayWidth, IfmapSramSzkB, FilterSramSzkB,
    OfmapSramSzkB, Dataflow (os/ws/is), and Bandwidth when [run_presets] InterfaceBandwidth is
    USER (a comma-separated list, one per memory bank, is allowed: the first entry is used, as
    SCALE-Sim's single-layer simulator does); [run_presets] InterfaceBandwidth (USER/CALC)."""
    fname, text = _read_text(path)
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        parser.read_string(text, source=fname)
    except configparser.MissingSectionHeaderError as e:
        raise ValueError(f"{_where(fname, e.lineno)}: expected a [section] header before {e.line.strip()!r}") from None
    except configparser.DuplicateSectionError as e:
        raise ValueError(f"{_where(fname, e.lineno)}: section [{e.section}] appears twice") from None
    except configparser.DuplicateOptionError as e:
        raise ValueError(f"{_where(fname, e.lineno, e.option)}: key appears twice in section "
                         f"[{e.section}] (keys are case-insensitive)") from None
    except configparser.ParsingError as e:
        lineno, line = e.errors[0]
        raise ValueError(f"{_where(fname, lineno)}: not a [section], a 'key: value' or a "
                         f"'key = value' line: {line}") from None
    except configparser.Error as e:
        raise ValueError(f"{fname}: not a valid INI file: {e}") from None

    index, section_lines = _index_options(text.split("\n"))
    consumed = set()

    def get(section, key, required=True):
        """(value, where) of section/key, where = 'file: line n: [section] Key'."""
        if not parser.has_section(section):
            found = ", ".join(f"[{s}]" for s in parser.sections()) or "none"
            raise ValueError(f"{fname}: missing section [{section}] (sections found: {found})")
        lkey = key.lower()
        if not parser.has_option(section, lkey):
            if not required:
                return None, None
            hint = ""
            if lkey in _V1_KEYS and parser.has_option(section, _V1_KEYS[lkey].lower()):
                hint = (f"; found {_V1_KEYS[lkey]}, the SCALE-Sim v1 spelling: v2/v3 files name it "
                        f"{key}")
            raise ValueError(f"{_where(fname, section_lines.get(section))}: section [{section}] "
                             f"has no key {key}{hint}")
        consumed.add((section, lkey))
        lineno, spelled = index.get((section, lkey), (None, key))
        return parser.get(section, lkey, raw=True), _where(fname, lineno, f"[{section}] {spelled}")

    run_name, _ = get("general", "run_name")

    mode, where = get("run_presets", "InterfaceBandwidth")
    mode = mode.strip().upper()
    if mode not in ("USER", "CALC"):
        raise ValueError(f"{where}: expected USER or CALC, got {mode!r}")

    arch = "architecture_presets"
    rows = _positive_int(*get(arch, "ArrayHeight"))
    cols = _positive_int(*get(arch, "ArrayWidth"))
    ifmap_kb = _positive_int(*get(arch, "IfmapSramSzkB"))
    filter_kb = _positive_int(*get(arch, "FilterSramSzkB"))
    ofmap_kb = _positive_int(*get(arch, "OfmapSramSzkB"))
    df_text, where = get(arch, "Dataflow")
    dataflow = df_text.strip().lower()
    if dataflow not in DATAFLOWS:
        raise ValueError(f"{where}: unknown dataflow {df_text!r}; expected os, ws or is")

    bandwidth = None
    if mode == "USER":
        bw_text, where = get(arch, "Bandwidth", required=False)
        if bw_text is None:
            raise ValueError(f"{_where(fname, section_lines.get(arch))}: section [{arch}] has no key "
                             f"Bandwidth, which InterfaceBandwidth USER requires")
        parts = bw_text.split(",")
        bandwidth = _positive_int(parts[0], where)
        for p in parts[1:]:
            _positive_int(p, where)

    counts = {}
    rest = []
    for (section, lkey), (lineno, spelled) in sorted(index.items(), key=lambda kv: kv[1][0]):
        if (section, lkey) in consumed:
            continue
        if section == parser.default_section:
            value = parser.defaults().get(lkey)
        elif parser.has_section(section) and parser.has_option(section, lkey):
            value = parser.get(section, lkey, raw=True)
        else:  # pragma: no cover - the index and configparser disagree on an odd line
            continue
        rest.append((section, spelled, value))
        counts[lkey] = counts.get(lkey, 0) + 1
    extra = {}
    for section, spelled, value in rest:
        extra[spelled if counts[spelled.lower()] == 1 else f"{section}.{spelled}"] = value

    return ScaleSimConfig(run_name=run_name, rows=rows, cols=cols, dataflow=dataflow,
                          ifmap_sram_kb=ifmap_kb, filter_sram_kb=filter_kb, ofmap_sram_kb=ofmap_kb,
                          bandwidth=bandwidth, extra=extra)


# ---------------------------------------------------------------------------------------------
# the topology files
# ---------------------------------------------------------------------------------------------

_CONV_FIELDS = ("ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "num_filters", "stride")
_GEMM_FIELDS = ("m", "n", "k")
_CONV_COLUMNS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
                 "Num Filter", "Strides")
_GEMM_COLUMNS = ("M", "N", "K")


@dataclass(frozen=True)
class Layer:
    """One row of a SCALE-Sim topology: kind "conv" (ifmap_h, ifmap_w, filter_h, filter_w,
    channels, num_filters, stride; the IFMAP already padded) or kind "gemm" (m, n, k, in
    accel_sim's convention: A is m x k, B is k x n).  sparsity: SCALE-Sim's optional "N:M"
    column, carried as text and not modelled."""

    name: str
    kind: str
    ifmap_h: int | None = None
    ifmap_w: int | None = None
    filter_h: int | None = None
    filter_w: int | None = None
    channels: int | None = None
    num_filters: int | None = None
    stride: int | None = None
    m: int | None = None
    n: int | None = None
    k: int | None = None
    sparsity: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__}")
        if self.kind not in ("conv", "gemm"):
            raise ValueError(f"kind must be 'conv' or 'gemm', got {self.kind!r}")
        used, unused = ((_CONV_FIELDS, _GEMM_FIELDS) if self.kind == "conv"
                        else (_GEMM_FIELDS, _CONV_FIELDS))
        for argname in used:
            if getattr(self, argname) is None:
                raise ValueError(f"a {self.kind} layer needs {argname}")
            _check_int_arg(getattr(self, argname), argname)
        for argname in unused:
            if getattr(self, argname) is not None:
                raise ValueError(f"{argname} belongs to the other layer kind, not to a {self.kind} layer")
        if self.kind == "conv":
            if self.filter_h > self.ifmap_h:
                raise ValueError(f"Filter Height ({self.filter_h}) is larger than IFMAP Height ({self.ifmap_h})")
            if self.filter_w > self.ifmap_w:
                raise ValueError(f"Filter Width ({self.filter_w}) is larger than IFMAP Width ({self.ifmap_w})")
        if self.sparsity is not None:
            m = _RATIO_RE.fullmatch(self.sparsity) if isinstance(self.sparsity, str) else None
            if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
                raise ValueError(f"sparsity must be a ratio 'N:M' with 1 <= N <= M, got {self.sparsity!r}")

    def output_hw(self, output_size="pytorch"):
        """(OH, OW) of a conv layer; output_size "pytorch" (floor, the default) or "scalesim"
        (ceil; see scalesim_output_size)."""
        if self.kind != "conv":
            raise ValueError(f"layer {self.name!r} is a GEMM; it has no output feature map")
        if output_size not in _OUTPUT_RULES:
            raise ValueError(f"output_size must be 'pytorch' or 'scalesim', got {output_size!r}")
        rule = _OUTPUT_RULES[output_size]
        return rule(self.ifmap_h, self.filter_h, self.stride), rule(self.ifmap_w, self.filter_w, self.stride)

    def gemm_shape(self, output_size="pytorch"):
        """(M, N, K) of the layer's GEMM: A is M x K, B is K x N.  For conv: M = OH * OW,
        N = num_filters, K = filter_h * filter_w * channels."""
        if self.kind == "gemm":
            if output_size not in _OUTPUT_RULES:
                raise ValueError(f"output_size must be 'pytorch' or 'scalesim', got {output_size!r}")
            return self.m, self.n, self.k
        oh, ow = self.output_hw(output_size)
        return oh * ow, self.num_filters, self.filter_h * self.filter_w * self.channels

    def macs(self, output_size="pytorch"):
        """Multiply-accumulates of the layer: M * N * K."""
        m, n, k = self.gemm_shape(output_size)
        return m * n * k


def _tokens(line):
    """Fields of a CSV line: split on commas, stripped, with a trailing '#...' field and the
    empty fields after the last comma dropped.  None for blank and '#' comment lines."""
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    fields = [f.strip() for f in s.split(",")]
    if fields and fields[-1].startswith("#"):
        fields.pop()
    while fields and fields[-1] == "":
        fields.pop()
    return fields


def _header_kind(fields):
    low = [" ".join(f.lower().split()) for f in fields]
    if len(low) >= 4 and low[1:4] == ["m", "n", "k"]:
        return "gemm"
    if len(low) >= 8 and "ifmap" in low[1] and "height" in low[1]:
        return "conv"
    return None


def load_topology(path, kind=None, split_depthwise=False) -> list[Layer]:
    """Read a SCALE-Sim topology CSV: the conv form (header `Layer name, IFMAP Height, IFMAP
    Width, Filter Height, Filter Width, Channels, Num Filter, Strides,`) or the GEMM form
    (header `Layer, M, N, K,`), each optionally with a last `Sparsity` column ("N:M").  The form
    is read from the header; kind="conv" or "gemm" (SCALE-Sim's `-i conv|gemm`) insists on one
    and accepts other header spellings.  Rows may end with or without a comma and carry spaces
    or tabs; blank rows, rows of bare commas and '#' comments are skipped.

    split_depthwise=True does what SCALE-Sim does with a conv row whose name contains "DP": it
    becomes `channels` layers named "<name>Channel_<i>", each with one channel."""
    if kind not in (None, "conv", "gemm"):
        raise ValueError(f"kind must be None, 'conv' or 'gemm', got {kind!r}")
    fname, text = _read_text(path)
    lines = text.split("\n")

    header_line, header = None, None
    for lineno, line in enumerate(lines, 1):
        fields = _tokens(line)
        if fields is not None and any(fields):
            header_line, header = lineno, fields
            break
    if header is None:
        raise ValueError(f"{fname}: empty topology file (no header and no layers)")

    found = _header_kind(header)
    if kind is None:
        if found is None:
            raise ValueError(
                f"{_where(fname, header_line)}: header {', '.join(header)!r} is neither SCALE-Sim's conv form "
                f"('Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                f"Num Filter, Strides,') nor its GEMM form ('Layer, M, N, K,'); pass kind='conv' or "
                f"kind='gemm' to read a file whose header is spelled differently")
        kind = found
    elif found is not None and found != kind:
        raise ValueError(f"{_where(fname, header_line)}: the header is SCALE-Sim's {found} form but "
                         f"kind={kind!r} was asked for")
    elif found is None and len(header) > 1 and all(_INT_RE.fullmatch(f) for f in header[1:]):
        raise ValueError(f"{_where(fname, header_line)}: this looks like a layer, not a header (SCALE-Sim "
                         f"always skips the first line as the header)")

    columns = _CONV_COLUMNS if kind == "conv" else _GEMM_COLUMNS
    low = [" ".join(f.lower().split()) for f in header]
    # SCALE-Sim's own writer (topology_utils.write_topo_file) emits "Stride height, Stride width".
    stride_w_col = kind == "conv" and len(low) > 8 and "stride" in low[8]
    n_required = 1 + len(columns) + (1 if stride_w_col else 0)
    names = ("Layer name",) + columns + (("Stride width",) if stride_w_col else ())

    layers = []
    for lineno, line in enumerate(lines[header_line:], header_line + 1):
        fields = _tokens(line)
        if fields is None or not any(fields):
            continue
        if len(fields) < n_required:
            raise ValueError(f"{_where(fname, lineno)}: expected {n_required} fields ({', '.join(names)}), "
                             f"got {len(fields)}: {line.strip()!r}")
        if len(fields) > n_required + 1:
            raise ValueError(f"{_where(fname, lineno)}: expected {n_required} fields ({', '.join(names)}) and "
                             f"an optional Sparsity, got {len(fields)}: {line.strip()!r}")
        name = fields[0]
        if not name:
            raise ValueError(f"{_where(fname, lineno, 'Layer name')}: empty layer name")
        values = [_positive_int(fields[i], _where(fname, lineno, f"{names[i]} (column {i + 1})"))
                  for i in range(1, n_required)]
        sparsity = None
        if len(fields) == n_required + 1:
            m = _RATIO_RE.fullmatch(fields[-1])
            where = _where(fname, lineno, f"Sparsity (column {n_required + 1})")
            if not m:
                raise ValueError(f"{where}: expected a sparsity ratio 'N:M' (or no field), got {fields[-1]!r}")
            if not 1 <= int(m.group(1)) <= int(m.group(2)):
                raise ValueError(f"{where}: expected N:M with 1 <= N <= M, got {fields[-1]!r}")
            sparsity = f"{int(m.group(1))}:{int(m.group(2))}"
        if stride_w_col:
            if values[-1] != values[-2]:
                raise ValueError(f"{_where(fname, lineno, 'Stride width')}: stride width {values[-1]} differs "
                                 f"from stride height {values[-2]}; only square strides are supported")
            values.pop()
        fields_of = dict(zip(_CONV_FIELDS if kind == "conv" else _GEMM_FIELDS, values))
        try:
            if kind == "conv" and split_depthwise and "DP" in name:
                fields_of["channels"], n_ch = 1, fields_of["channels"]
                layers.extend(Layer(name=f"{name}Channel_{i}", kind=kind, sparsity=sparsity, **fields_of)
                              for i in range(n_ch))
            else:
                layers.append(Layer(name=name, kind=kind, sparsity=sparsity, **fields_of))
        except ValueError as e:
            raise ValueError(f"{_where(fname, lineno)}: {e}") from None
    if not layers:
        raise ValueError(f"{_where(fname, header_line)}: empty topology (a header and no layers)")
    return layers
