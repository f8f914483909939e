#!/usr/bin/python3
"""PyTorch <-> minsharp interop without the `safetensors` package.

Standard library + numpy (+ torch for the model functions). Run it with the Python that
has torch (on Debian: /usr/bin/python3).

What it does:
  * reads and writes safetensors files (8-byte little-endian header length, a JSON header
    {"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}, raw
    little-endian data), laid out as minsharp's own writer does;
  * maps an nn.Sequential's state-dict keys ("0.weight", "3.bias", ...) to minsharp's
    ("layer0.weight", "layer1.bias", ...: parametric layers counted in order) and back;
  * derives minsharp's --model spec string from an nn.Sequential, and builds an
    nn.Sequential from a spec;
  * reads MNIST's IDX files and normalizes them as minsharp does.

Command line (each subcommand has --help):
  minsharp_torch.py export MODEL.pt OUT.safetensors [--spec SPEC]
      (MODEL may also be a safetensors file with PyTorch's names: they are renamed)
  minsharp_torch.py import IN.safetensors OUT.pt [--spec SPEC] [--state-dict]
  minsharp_torch.py spec MODEL.pt
  minsharp_torch.py show FILE.safetensors

Python API:
  save_sequential(model, path, spec=None)   export (spec derived from the model)
  load_into(model, path)                    minsharp checkpoint -> existing torch model
  spec_from_sequential(model) / sequential_from_spec(spec)
  read_safetensors(path) / write_safetensors(path, tensors, metadata)
"""

import argparse
import gzip
import json
import os
import struct
import sys
import tempfile
from collections import OrderedDict

import numpy as np

PROG = "minsharp_torch"

# Metadata keys minsharp writes and reads (include/minsharp/io/checkpoint.hpp).
META_SPEC = "minsharp.spec"
META_INPUT_SHAPE = "minsharp.input_shape"
META_SOURCE = "minsharp.source"

# minsharp's model zoo (src/nn/models.cpp is the source of truth; kept in step by
# tests/e2e_torch_interop.sh, which compares one against a checkpoint apps/train writes).
ZOO = {
    "small-mlp": "flatten,dense:20,relu,dense:20,relu,dense:10",
    "small-cnn": "conv:20:5,relu,maxpool:2:2,conv:20:5,relu,maxpool:2:2,flatten,dense:10",
    "mlp": "flatten,dense:512,relu,dense:128,relu,dense:512,relu,dense:10",
    "lenet": "conv:6:5:pad2,relu,maxpool:2:1,conv:16:5,relu,maxpool:2:2,conv:120:5,relu,"
             "flatten,dense:84,relu,dense:10",
}

MNIST_INPUT = (1, 28, 28)


class InteropError(Exception):
    """A file or model cannot be converted; the message says why in one line."""


# ---------------------------------------------------------------------------------------
# safetensors

# Safetensors dtype name -> numpy dtype (little-endian). BF16 has no numpy type: it is read
# as raw uint16 and widened to float32 (a bfloat16 is the top half of a float32).
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
          np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("<i2"): "I16",
          np.dtype("i1"): "I8", np.dtype("u1"): "U8", np.dtype("?"): "BOOL"}


def _safetensors_problem(raw):
    """Why `raw` is not a safetensors file, naming the usual mistakes; None if it may be one.

    Only a file whose length field or header is impossible is diagnosed: a valid header
    length may well start with the bytes of a pickle or zip signature."""
    if len(raw) >= 9:
        n = struct.unpack("<Q", raw[:8])[0]
        if n <= len(raw) - 8 and raw[8:9] == b"{":
            return None
    if raw[:4] == b"PK\x03\x04":
        return "not a safetensors file (a torch.save zip archive? export it with " \
               "'minsharp_torch.py export')"
    if raw[:1] == b"\x80":
        return "not a safetensors file (a torch.save / pickle file? export it with " \
               "'minsharp_torch.py export')"
    if len(raw) < 8:
        return "file has %d bytes, fewer than the 8-byte header length" % len(raw)
    return "not a safetensors file (header length %d, %d bytes follow; no JSON header)" % (
        struct.unpack("<Q", raw[:8])[0], len(raw) - 8)


def read_safetensors(path, bf16_as_float32=True):
    """Reads a safetensors file; returns (OrderedDict name -> numpy array, metadata dict).

    Checks what minsharp's reader checks: known dtypes, shapes matching the byte spans,
    tensors tiling the data buffer exactly, string metadata. Tensors keep the header's order.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InteropError("cannot read '%s': %s" % (path, e.strerror or e))
    problem = _safetensors_problem(raw)
    if problem:
        raise InteropError("'%s': %s" % (path, problem))
    n = struct.unpack("<Q", raw[:8])[0]
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=OrderedDict)
    except (UnicodeDecodeError, ValueError) as e:
        raise InteropError("'%s': header is not valid JSON (%s); not a safetensors file?"
                           % (path, e))
    if not isinstance(header, dict):
        raise InteropError("'%s': header is not a JSON object" % path)
    data = memoryview(raw)[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise InteropError("'%s': __metadata__ must map strings to strings" % path)
    spans, tensors = [], OrderedDict()
    for name, info in header.items():
        where = "'%s': tensor '%s'" % (path, name)
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise InteropError(where + ": entry needs dtype, shape and data_offsets")
        dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise InteropError(where + ": unknown dtype %r (supported: %s)"
                               % (info["dtype"], ", ".join(_DTYPES)))
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2 \
                or not all(isinstance(d, int) and d >= 0 for d in shape + offsets):
            raise InteropError(where + ": bad shape %r or data_offsets %r" % (shape, offsets))
        begin, end = offsets
        if begin > end:
            raise InteropError(where + ": bad shape %r or data_offsets %r"
                               % (shape, info["data_offsets"]))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != end - begin:
            raise InteropError(where + ": shape %r of %s needs %d bytes, data_offsets span %d"
                               % (shape, info["dtype"], count * dtype.itemsize, end - begin))
        if end > len(data):
            raise InteropError(where + ": data_offsets end %d beyond the %d data bytes "
                               "(truncated?)" % (end, len(data)))
        spans.append((begin, end, name))
        array = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).copy()
        if info["dtype"] == "BF16" and bf16_as_float32:
            array = (array.astype("<u4") << 16).view("<f4")
        tensors[name] = array
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise InteropError("'%s': tensor '%s' starts at %d, expected %d (hole or overlap)"
                               % (path, name, begin, covered))
        covered = end
    if covered != len(data):
        raise InteropError("'%s': %d trailing bytes after the last tensor"
                           % (path, len(data) - covered))
    return tensors, dict(metadata)


def _write_atomic(path, payload):
    """Writes via a temp file in the same folder and a rename: readers never see half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_safetensors(path, tensors, metadata=None):
    """Writes name -> array (numpy or torch, CPU) as safetensors, atomically.

    Layout as minsharp's (and the reference) writer: compact JSON header with __metadata__
    first, padded with spaces to 8 bytes; data ordered by descending element size (so every
    tensor is aligned), otherwise in the given order. Arrays keep their dtype; minsharp
    reads F16, BF16, F32 and F64 parameters.
    """
    arrays = OrderedDict()
    for name, value in tensors.items():
        if name == "__metadata__":
            raise InteropError("tensor name '__metadata__' is reserved")
        if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
            value = value.detach().cpu().contiguous().numpy()
        array = np.ascontiguousarray(value)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype not in _NAMES:
            raise InteropError("tensor '%s': dtype %s has no safetensors equivalent here"
                               % (name, array.dtype))
        arrays[name] = array.astype(dtype, copy=False)
    header = OrderedDict()
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise InteropError("metadata must map strings to strings")
        header["__metadata__"] = OrderedDict(metadata)
    order = sorted(arrays, key=lambda k: -arrays[k].dtype.itemsize)  # stable
    offset = 0
    for name in order:
        a = arrays[name]
        header[name] = OrderedDict([("dtype", _NAMES[a.dtype]), ("shape", list(a.shape)),
                                    ("data_offsets", [offset, offset + a.nbytes])])
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    payload = b"".join([struct.pack("<Q", len(text)), text] + [arrays[k].tobytes() for k in order])
    _write_atomic(path, payload)


# ---------------------------------------------------------------------------------------
# Names: PyTorch state-dict keys <-> minsharp's layerK.weight / layerK.bias

def minsharp_names(keys):
    """OrderedDict torch key -> minsharp name, for a state dict's keys in module order.

    Keys are grouped by their module prefix (everything before the last dot: "0", "3",
    "fc1", "features.0"); the k-th group with parameters becomes layerk. Only weight and
    bias entries are allowed: minsharp's layers have nothing else (no BatchNorm buffers).
    """
    mapping, prefixes = OrderedDict(), []
    for key in keys:
        prefix, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias"):
            raise InteropError(
                "state-dict entry '%s' is neither a weight nor a bias; minsharp's layers "
                "(Linear, Conv2d) have only those" % key)
        if prefix not in prefixes:
            prefixes.append(prefix)
        mapping[key] = "layer%d.%s" % (prefixes.index(prefix), leaf)
    return mapping


def to_minsharp_state(state_dict):
    """A torch state dict (any parameter naming, in module order) renamed for minsharp."""
    mapping = minsharp_names(list(state_dict.keys()))
    return OrderedDict((mapping[k], v) for k, v in state_dict.items())


def _looks_like_torch_names(names):
    return any(not n.startswith("layer") for n in names)


def module_order(state):
    """`state` (name -> tensor) from a safetensors file with PyTorch's names, in module order.

    A safetensors header is a JSON object: its order is no module order (the safetensors
    package sorts names, so "10.weight" comes before "2.weight"). Numeric module paths, as
    an nn.Sequential has ("0", "3", "1.2"), are sorted numerically; names such as "fc1" or
    "features.0" carry no order, and are refused rather than guessed."""
    def path(key):
        prefix = key.rpartition(".")[0]
        parts = prefix.split(".") if prefix else []
        if not parts or not all(p.isdigit() for p in parts):
            raise InteropError(
                "cannot tell the layer order of '%s' from a safetensors file (its header has "
                "no order): export from the torch.save'd model or state dict instead" % key)
        return [int(p) for p in parts], key.endswith(".bias")
    return OrderedDict((k, state[k]) for k in sorted(state, key=path))


# ---------------------------------------------------------------------------------------
# Specs: nn.Sequential <-> minsharp's --model string

def _torch():
    try:
        import torch  # noqa: F401
        return torch
    except ImportError as e:
        raise InteropError("this needs PyTorch, which %s cannot import (%s); on Debian use "
                           "/usr/bin/python3 with python3-torch" % (sys.executable, e))


def _square(value, what, layer):
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise InteropError("%s: %s %r is not square; minsharp's windows are square"
                               % (layer, what, tuple(value)))
        value = value[0]
    if not isinstance(value, int):
        raise InteropError("%s: %s %r is not a whole number" % (layer, what, value))
    return value


def _leaf_modules(model, prefix=""):
    """(name, module) of the Sequential's leaves in order; nested Sequentials are flattened."""
    nn = _torch().nn
    for name, child in model.named_children():
        path = prefix + name
        if isinstance(child, nn.Sequential):
            yield from _leaf_modules(child, path + ".")
        else:
            yield path, child


def _next_shape(shape, kind, out=None, k=None, s=1, p=0):
    c, h, w = shape
    if kind == "conv":
        return (out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    if kind == "pool":
        return (c, (h - k) // s + 1, (w - k) // s + 1)
    if kind == "flat":
        return (c * h * w, 1, 1)
    return shape


def spec_from_sequential(model, input_shape=MNIST_INPUT):
    """minsharp's spec string for an nn.Sequential of Linear, Conv2d, MaxPool2d, AvgPool2d,
    ReLU and Flatten (nested Sequentials allowed). Raises InteropError for any other module, or for
    options minsharp lacks, naming the layer. Shapes are checked along the way."""
    nn = _torch().nn
    if not isinstance(model, nn.Sequential):
        raise InteropError("model is a %s, not an nn.Sequential; minsharp models are "
                           "sequential stacks" % type(model).__name__)
    tokens, shape = [], tuple(input_shape)
    for name, m in _leaf_modules(model):
        layer = "layer '%s' (%s)" % (name, type(m).__name__)
        if isinstance(m, nn.Linear):
            size = shape[0] * shape[1] * shape[2]
            if m.in_features != size:
                raise InteropError("%s: in_features %d, but the input here has %d values "
                                   "(shape %s)" % (layer, m.in_features, size, shape))
            tokens.append("dense:%d%s" % (m.out_features, "" if m.bias is not None else ":nobias"))
            shape = (m.out_features, 1, 1)
        elif isinstance(m, nn.Conv2d):
            k = _square(m.kernel_size, "kernel_size", layer)
            s = _square(m.stride, "stride", layer)
            if isinstance(m.padding, str):
                raise InteropError("%s: padding '%s'; minsharp needs a number" % (layer, m.padding))
            p = _square(m.padding, "padding", layer)
            if _square(m.dilation, "dilation", layer) != 1 or m.groups != 1 or \
                    m.padding_mode != "zeros":
                raise InteropError("%s: dilation, groups and padding_mode must be the defaults "
                                   "(1, 1, 'zeros') for minsharp" % layer)
            if m.in_channels != shape[0]:
                raise InteropError("%s: in_channels %d, but the input here has %d channels"
                                   % (layer, m.in_channels, shape[0]))
            token = "conv:%d:%d" % (m.out_channels, k)
            token += ":stride%d" % s if s != 1 else ""
            token += ":pad%d" % p if p != 0 else ""
            token += "" if m.bias is not None else ":nobias"
            tokens.append(token)
            shape = _next_shape(shape, "conv", m.out_channels, k, s, p)
        elif isinstance(m, nn.MaxPool2d):
            k = _square(m.kernel_size, "kernel_size", layer)
            s = _square(m.stride if m.stride is not None else m.kernel_size, "stride", layer)
            if _square(m.padding, "padding", layer) != 0 or \
                    _square(m.dilation, "dilation", layer) != 1 or m.ceil_mode or \
                    m.return_indices:
                raise InteropError("%s: padding, dilation, ceil_mode and return_indices must be "
                                   "the defaults for minsharp" % layer)
            tokens.append("maxpool:%d:%d" % (k, s))
            shape = _next_shape(shape, "pool", k=k, s=s)
        elif isinstance(m, nn.AvgPool2d):
            k = _square(m.kernel_size, "kernel_size", layer)
            s = _square(m.stride if m.stride is not None else m.kernel_size, "stride", layer)
            if _square(m.padding, "padding", layer) != 0 or m.ceil_mode or \
                    m.divisor_override is not None:
                raise InteropError("%s: padding, ceil_mode and divisor_override must be the "
                                   "defaults for minsharp" % layer)
            tokens.append("avgpool:%d:%d" % (k, s))
            shape = _next_shape(shape, "pool", k=k, s=s)
        elif isinstance(m, nn.ReLU):
            tokens.append("relu")
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise InteropError("%s: minsharp flattens from dim 1 to the end only" % layer)
            tokens.append("flatten")
            shape = _next_shape(shape, "flat")
        else:
            raise InteropError("%s: minsharp has no such layer (supported: Linear, Conv2d, "
                               "MaxPool2d, AvgPool2d, ReLU, Flatten)" % layer)
        if min(shape) < 1:
            raise InteropError("%s: output shape %s is empty for input %s"
                               % (layer, shape, tuple(input_shape)))
    if not tokens:
        raise InteropError("model is an empty nn.Sequential")
    return ",".join(tokens)


def _positive(text, token):
    if not text.isdigit() or int(text) == 0:
        raise InteropError("model spec: token '%s': '%s' is not a positive whole number"
                           % (token, text))
    return int(text)


def sequential_from_spec(spec, input_shape=MNIST_INPUT):
    """The nn.Sequential minsharp builds for `spec` (a spec string or zoo name), with
    PyTorch's default init. minsharp lets a dense layer read a (C, H, W) activation
    directly; PyTorch needs an nn.Flatten there, so one is inserted (it has no parameters:
    the layerK numbering is unchanged)."""
    nn = _torch().nn
    spec = ZOO.get(spec, spec)
    modules, shape = [], tuple(input_shape)
    for token in spec.split(","):
        f = token.split(":")
        kind = f[0]
        if kind == "relu" and len(f) == 1:
            modules.append(nn.ReLU())
        elif kind == "flatten" and len(f) == 1:
            modules.append(nn.Flatten())
            shape = _next_shape(shape, "flat")
        elif kind in ("dense", "conv"):
            fixed = 2 if kind == "dense" else 3
            if len(f) < fixed:
                raise InteropError("model spec: token '%s': expected %s" % (
                    token, "dense:OUT[:nobias]" if kind == "dense" else
                    "conv:OUT:K[:strideS][:padP][:nobias]"))
            bias, stride, pad = True, 1, 0
            for opt in f[fixed:]:
                if opt == "nobias":
                    bias = False
                elif kind == "conv" and opt.startswith("stride"):
                    stride = _positive(opt[6:], token)
                elif kind == "conv" and opt.startswith("pad"):
                    pad = 0 if opt == "pad0" else _positive(opt[3:], token)
                else:
                    raise InteropError("model spec: token '%s': unknown option '%s'" % (token, opt))
            out = _positive(f[1], token)
            if kind == "dense":
                if shape[1] != 1 or shape[2] != 1:
                    modules.append(nn.Flatten())
                modules.append(nn.Linear(shape[0] * shape[1] * shape[2], out, bias=bias))
                shape = (out, 1, 1)
            else:
                k = _positive(f[2], token)
                modules.append(nn.Conv2d(shape[0], out, k, stride=stride, padding=pad, bias=bias))
                shape = _next_shape(shape, "conv", out, k, stride, pad)
        elif kind in ("maxpool", "avgpool"):
            if len(f) != 3:
                raise InteropError("model spec: token '%s': expected %s:K:S" % (token, kind))
            k, s = _positive(f[1], token), _positive(f[2], token)
            modules.append(nn.MaxPool2d(k, s) if kind == "maxpool" else nn.AvgPool2d(k, s))
            shape = _next_shape(shape, "pool", k=k, s=s)
        else:
            raise InteropError("model spec: token '%s': unknown layer (expected dense, conv, "
                               "maxpool, avgpool, relu or flatten)" % token)
        if min(shape) < 1:
            raise InteropError("model spec: token '%s': output is empty for input %s"
                               % (token, tuple(input_shape)))
    return nn.Sequential(*modules)


def _strip_flatten(spec):
    return ",".join(t for t in ZOO.get(spec, spec).split(",") if t != "flatten")


# ---------------------------------------------------------------------------------------
# Export and import

def _shape_text(shape):
    return ",".join(str(d) for d in shape)


def save_state_dict(state_dict, path, spec=None, input_shape=MNIST_INPUT, metadata=None,
                    dtype="float32"):
    """Writes a torch state dict (keys in module order) as a minsharp checkpoint.

    With `spec`, its parameter shapes are checked against the spec and the spec and input
    shape are stored, so apps/sharpness needs no --model. Floating tensors are written as
    `dtype` (float32: what minsharp writes; None keeps each tensor's own)."""
    renamed = to_minsharp_state(state_dict)
    tensors = OrderedDict()
    for name, value in renamed.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if dtype is not None and value.dtype.kind == "f":
            value = value.astype(dtype)
        tensors[name] = value
    meta = OrderedDict(metadata or {})
    meta.setdefault(META_SOURCE, "pytorch (scripts/minsharp_torch.py)")
    if spec is not None:
        expected = sequential_from_spec(spec, input_shape).state_dict()
        want = OrderedDict((k, tuple(v.shape)) for k, v in to_minsharp_state(expected).items())
        have = OrderedDict((k, tuple(v.shape)) for k, v in tensors.items())
        if want != have:
            diff = [k for k in list(want) + list(have) if want.get(k) != have.get(k)][0]
            raise InteropError("the weights do not fit spec '%s': %s is %s in the weights, %s "
                               "in the spec" % (spec, diff, have.get(diff, "missing"),
                                                want.get(diff, "missing")))
        meta[META_SPEC] = ZOO.get(spec, spec)
        meta[META_INPUT_SHAPE] = _shape_text(input_shape)
    write_safetensors(path, tensors, meta)


def save_sequential(model, path, spec=None, input_shape=MNIST_INPUT, metadata=None):
    """Exports an nn.Sequential as a minsharp checkpoint with its spec in the metadata.

    The spec is derived from the model unless given (InteropError if the model has a layer
    minsharp lacks). Returns the spec, to pass as --model if wanted."""
    derived = spec_from_sequential(model, input_shape)
    if spec is not None and _strip_flatten(spec) != _strip_flatten(derived):
        raise InteropError("spec '%s' does not describe the model (%s)" % (spec, derived))
    spec = spec or derived
    save_state_dict(model.state_dict(), path, spec=spec, input_shape=input_shape,
                    metadata=metadata)
    return ZOO.get(spec, spec)


def load_into(model, path, strict=True):
    """Loads a minsharp checkpoint (layer0.weight, ...) into a torch module in place.

    The k-th module with parameters receives layerk's. Shapes must match; with strict,
    every parameter must be present, every minsharp tensor used (optimiser state,
    "optim.*", is ignored), and a spec in the file must agree with the model's. Returns
    the model."""
    torch = _torch()
    tensors, metadata = read_safetensors(path)
    tensors = OrderedDict((k, v) for k, v in tensors.items() if not k.startswith("optim."))
    if _looks_like_torch_names(tensors):
        tensors = to_minsharp_state(module_order(tensors))  # a file with PyTorch's own names
    own = model.state_dict()
    mapping = minsharp_names(list(own.keys()))
    if strict and META_SPEC in metadata:
        try:
            mine = spec_from_sequential(model, _input_shape(metadata))
        except InteropError:
            mine = None
        if mine is not None and _strip_flatten(mine) != _strip_flatten(metadata[META_SPEC]):
            raise InteropError("'%s' holds architecture '%s', the model is '%s'"
                               % (path, metadata[META_SPEC], mine))
    new_state = OrderedDict()
    for key, name in mapping.items():
        if name not in tensors:
            if strict:
                raise InteropError("'%s' has no tensor '%s' for the model's '%s' %s"
                                   % (path, name, key, tuple(own[key].shape)))
            continue
        value = tensors[name]
        if tuple(value.shape) != tuple(own[key].shape):
            raise InteropError("'%s': tensor '%s' has shape %s, the model's '%s' has %s"
                               % (path, name, tuple(value.shape), key, tuple(own[key].shape)))
        new_state[key] = torch.from_numpy(np.ascontiguousarray(value)).to(own[key].dtype)
    unused = [n for n in tensors if n not in set(mapping.values())]
    if strict and unused:
        raise InteropError("'%s': tensor '%s' does not belong to the model" % (path, unused[0]))
    model.load_state_dict(new_state, strict=strict)
    return model


def _input_shape(metadata):
    text = metadata.get(META_INPUT_SHAPE)
    if not text:
        return MNIST_INPUT
    try:
        shape = tuple(int(x) for x in text.split(","))
        assert len(shape) == 3 and min(shape) > 0
        return shape
    except (ValueError, AssertionError):
        raise InteropError("metadata %s '%s' is not of the form C,H,W" % (META_INPUT_SHAPE, text))


def model_from_checkpoint(path, spec=None):
    """A new nn.Sequential built from the file's spec (or `spec`) holding its weights."""
    _, metadata = read_safetensors(path)
    spec = spec or metadata.get(META_SPEC)
    if not spec:
        raise InteropError("'%s' has no %s metadata; name the architecture with --spec"
                           % (path, META_SPEC))
    return load_into(sequential_from_spec(spec, _input_shape(metadata)), path)


def _torch_load(path):
    torch = _torch()
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InteropError("cannot read '%s': %s" % (path, e.strerror or e))
    if len(head) >= 9 and head[8:9] == b"{":
        raise InteropError("'%s' is a safetensors file, not a torch.save file" % path)
    try:
        # A whole pickled nn.Module needs the full unpickler: load only files you trust.
        return torch.load(path, map_location="cpu")
    except Exception as e:  # torch raises many types for a bad file
        raise InteropError("torch.load('%s') failed: %s" % (path, str(e).splitlines()[0]))


def _state_and_model(obj, path):
    """(state dict, module or None) from what torch.load returned."""
    torch = _torch()
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict(), obj
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], (dict, torch.nn.Module)):
                return _state_and_model(obj[wrapper], path)
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise InteropError("'%s' holds a dict whose entry '%s' is not a tensor; save the "
                               "model or its state_dict()" % (path, bad[0]))
        return obj, None
    raise InteropError("'%s' holds a %s, not an nn.Module or a state dict"
                       % (path, type(obj).__name__))


# ---------------------------------------------------------------------------------------
# MNIST, normalized as minsharp's loader does (torchvision's ToTensor + Normalize(0.5, 0.5))

def read_idx(path):
    """An unsigned-byte IDX file (raw or gzip) as a numpy uint8 array."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise InteropError("'%s' is not an unsigned-byte IDX file" % path)
    rank = raw[3]
    dims = struct.unpack(">%dI" % rank, raw[4:4 + 4 * rank])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        raise InteropError("'%s': %d data bytes, the header announces %d"
                           % (path, data.size, int(np.prod(dims))))
    return data.reshape(dims)


def load_mnist(folder, part="train"):
    """(images float32 N×1×28×28 in [-1, 1], labels int64) of MNIST's train or t10k part."""
    prefix = "train" if part == "train" else "t10k"
    arrays = []
    for kind, suffix in (("images", "idx3-ubyte"), ("labels", "idx1-ubyte")):
        base = os.path.join(folder, "%s-%s-%s" % (prefix, kind, suffix))
        path = base if os.path.exists(base) else base + ".gz"
        if not os.path.exists(path):
            raise InteropError("MNIST file %s (or .gz) not found; run data/fetch_mnist.sh "
                               "or pass the folder that holds it" % base)
        arrays.append(read_idx(path))
    images = (arrays[0].astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    return images.reshape(-1, 1, 28, 28), arrays[1].astype(np.int64)


# ---------------------------------------------------------------------------------------
# Command line

def _parse_shape(text):
    try:
        shape = tuple(int(x) for x in text.split(","))
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError
        return shape
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not C,H,W (e.g. 1,28,28)" % text)


def _is_safetensors(path):
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise InteropError("cannot read '%s': %s" % (path, e.strerror or e))
    return len(head) == 9 and head[8:9] == b"{"


def _cmd_export(args):
    if _is_safetensors(args.model):
        # A state dict saved with PyTorch's names by the safetensors package (or anyone):
        # only the names change.
        tensors, _ = read_safetensors(args.model)
        state, module = module_order(tensors), None
    else:
        state, module = _state_and_model(_torch_load(args.model), args.model)
    if module is not None and args.spec is None:
        try:
            spec = save_sequential(module, args.out, input_shape=args.input_shape)
        except InteropError as e:
            raise InteropError("%s (or name the architecture with --spec)" % e)
    else:
        spec = ZOO.get(args.spec, args.spec) if args.spec else None
        save_state_dict(state, args.out, spec=spec, input_shape=args.input_shape)
    mapping = minsharp_names(list(state.keys()))
    print("wrote %s: %d tensors (%s)" % (args.out, len(mapping), ", ".join(
        "%s -> %s" % kv for kv in list(mapping.items())[:4]) + (", ..." if len(mapping) > 4 else "")))
    if spec:
        print("spec: %s" % spec)
        print("next: build/apps/sharpness --checkpoint %s --model '%s'" % (args.out, spec))
    else:
        print("no spec stored (a bare state dict): give apps/sharpness --model SPEC, or export "
              "again with --spec")


def _cmd_import(args):
    torch = _torch()
    model = model_from_checkpoint(args.checkpoint, args.spec)
    payload = model.state_dict() if args.state_dict else model
    buffer = args.out + ".tmp.%d" % os.getpid()
    try:
        torch.save(payload, buffer)
        os.replace(buffer, args.out)
    finally:
        if os.path.exists(buffer):
            os.unlink(buffer)
    print("wrote %s: %s" % (args.out, "state dict of " if args.state_dict else "nn.Sequential"))
    print(model)


def _cmd_spec(args):
    state, module = _state_and_model(_torch_load(args.model), args.model)
    if module is None:
        raise InteropError("'%s' is a bare state dict: it has no layers to read a spec from; "
                           "save the nn.Sequential itself" % args.model)
    print(spec_from_sequential(module, args.input_shape))


def _cmd_show(args):
    tensors, metadata = read_safetensors(args.file)
    for k in sorted(metadata):
        value = metadata[k]
        print("metadata %s = %s" % (k, value if len(value) <= 200 else value[:200] + "..."))
    for name, array in tensors.items():
        print("%-24s %-8s %s" % (name, array.dtype, list(array.shape)))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description="PyTorch <-> minsharp checkpoints (safetensors) without the "
        "safetensors package.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("export", help="torch.save'd nn.Sequential or state dict -> minsharp "
                       "safetensors", description="Exports a torch.save'd nn.Sequential (spec "
                       "derived and stored) or state dict (names mapped in order; spec only "
                       "with --spec) to a minsharp checkpoint. torch.load unpickles: only load "
                       "files you trust.")
    p.add_argument("model", help="file written by torch.save (a model or a state dict), or a "
                   "safetensors state dict with PyTorch's names (0.weight, fc1.weight, ...)")
    p.add_argument("out", help="safetensors file to write")
    p.add_argument("--spec", help="minsharp spec or zoo name to store (checked against the "
                   "weights' shapes); default: derived from the nn.Sequential")
    p.add_argument("--input-shape", type=_parse_shape, default=MNIST_INPUT, metavar="C,H,W",
                   help="per-example input shape (default 1,28,28)")
    p.set_defaults(run=_cmd_export)
    p = sub.add_parser("import", help="minsharp safetensors -> torch.save'd nn.Sequential",
                       description="Builds the nn.Sequential of the checkpoint's spec (or "
                       "--spec), loads its weights and torch.saves it.")
    p.add_argument("checkpoint", help="minsharp safetensors file (model.safetensors, ...)")
    p.add_argument("out", help="file to torch.save")
    p.add_argument("--spec", help="architecture when the file stores none")
    p.add_argument("--state-dict", action="store_true", help="save only the state dict "
                   "(keys 0.weight, ...) instead of the whole module")
    p.set_defaults(run=_cmd_import)
    p = sub.add_parser("spec", help="print the minsharp spec of a torch.save'd nn.Sequential",
                       description="Prints the --model string of a torch.save'd nn.Sequential.")
    p.add_argument("model", help="file written by torch.save(model)")
    p.add_argument("--input-shape", type=_parse_shape, default=MNIST_INPUT, metavar="C,H,W",
                   help="per-example input shape (default 1,28,28)")
    p.set_defaults(run=_cmd_spec)
    p = sub.add_parser("show", help="list a safetensors file's tensors and metadata",
                       description="Lists a safetensors file's metadata and tensors.")
    p.add_argument("file")
    p.set_defaults(run=_cmd_show)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except InteropError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
