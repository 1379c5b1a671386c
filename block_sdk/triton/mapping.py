"""The configuration of a Triton-backed block and the conversions packet <-> Triton tensors.

Configuration comes from the block's init data (`blockInitData`):

    {"triton_url": "127.0.0.1:8001", "protocol": "grpc", "model_name": "linear",
     "model_version": "1",
     "inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "from": "data.x"}],
     "outputs": [{"name": "y", "to": "y"}, {"name": "label", "to": "result.label"}],
     "timeout_s": 10}

`from` says where an input tensor comes from: `data` (the whole JSON object), `data.a.b`
(a path into it; integer segments index lists), `files[0]` (a file by position) or
`files.<name>` (the file whose metadata `name` is `<name>`). A file is read as `.npy`
(`"format": "npy"`, the default) or as raw bytes (`"format": "raw"`: a one-element BYTES
tensor, or the bytes reinterpreted as the datatype). `to` is a path in the output object;
`"format": "npy"` on an output returns it as an attached `.npy` file instead.

Every problem with a request is a `DataPlaneError` with code INVALID_ARGUMENT and a message
naming the input, what was expected and what arrived; configuration problems are
`TritonConfigError`, listing all of them at once.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from block_sdk.packet import INVALID_ARGUMENT, DataPlaneError

PROTOCOLS = ("http", "grpc")
FILE_FORMATS = ("npy", "raw")

# Triton datatype -> numpy dtype (BF16 has no numpy type and is not accepted here).
NP_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# Model metadata spells some types differently from the protocol (TYPE_FP32 in configs).
_ALIASES = {"STRING": "BYTES", "FLOAT": "FP32", "DOUBLE": "FP64", "HALF": "FP16"}


class TritonConfigError(ValueError):
    """The block's init data does not describe a usable Triton mapping."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def normalize_datatype(value: Any) -> str:
    text = str(value or "").upper().removeprefix("TYPE_")
    return _ALIASES.get(text, text)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One model input and where its value comes from in a packet."""

    name: str
    source: str  # "data", "data.a.b", "files[0]", "files.<name>"
    datatype: str | None = None  # None: taken from the model's metadata
    shape: tuple[int, ...] | None = None  # None: the value's own shape
    format: str = "npy"  # for file sources

    @property
    def from_file(self) -> bool:
        return self.source.startswith("files")


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One model output and where it goes in the block's output."""

    name: str
    to: str
    format: str = "json"  # "json": a (nested) list in the output object; "npy": a file


def _parse_shape(value: Any, where: str, problems: list[str]) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and (d == -1 or d >= 0) for d in value
    ):
        problems.append(f"{where}.shape must be a list of integers (-1 for a free dimension)")
        return None
    return tuple(value)


def _source_ok(source: str) -> bool:
    if source == "data" or (source.startswith("data.") and len(source) > 5):
        return True
    if source.startswith("files[") and source.endswith("]"):
        return source[6:-1].isdigit()
    return source.startswith("files.") and len(source) > 6


@dataclass(slots=True)
class TritonBlockConfig:
    """Validated configuration of a `TritonBlock` (see the module docstring)."""

    model_name: str
    inputs: list[InputSpec]
    outputs: list[OutputSpec] = field(default_factory=list)  # empty: every model output
    protocol: str = "http"
    triton_url: str | None = None  # None: from the third-party init workload
    model_version: str = ""
    timeout_s: float = 10.0
    wait_for_init_s: float = 60.0
    ssl: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_init_data(cls, init_data: dict[str, Any]) -> TritonBlockConfig:
        problems: list[str] = []
        if not isinstance(init_data, dict):
            raise TritonConfigError(["init data must be a JSON object"])
        model_name = init_data.get("model_name")
        if not isinstance(model_name, str) or not model_name:
            problems.append("model_name is required (the Triton model to call)")
        protocol = str(init_data.get("protocol", "http")).lower()
        if protocol not in PROTOCOLS:
            problems.append(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        version = init_data.get("model_version", "")
        if version is None:
            version = ""
        if not isinstance(version, str | int) or isinstance(version, bool):
            problems.append("model_version must be a string or an integer")
        url = init_data.get("triton_url")
        ssl = False
        if url is not None:
            if not isinstance(url, str) or not url.strip():
                problems.append("triton_url must be a non-empty string like 'host:port'")
                url = None
            else:
                url, ssl = split_url(url)
        timeout_s = init_data.get("timeout_s", 10.0)
        if not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or timeout_s <= 0:
            problems.append("timeout_s must be a positive number")
            timeout_s = 10.0
        wait_s = init_data.get("wait_for_init_s", 60.0)
        if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or wait_s < 0:
            problems.append("wait_for_init_s must be a number >= 0")
            wait_s = 60.0
        headers = init_data.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            problems.append("headers must map strings to strings")
            headers = {}

        inputs: list[InputSpec] = []
        raw_inputs = init_data.get("inputs")
        if not isinstance(raw_inputs, list) or not raw_inputs:
            problems.append("inputs must be a non-empty list of {name, datatype, shape?, from}")
            raw_inputs = []
        seen: set[str] = set()
        for i, item in enumerate(raw_inputs):
            where = f"inputs[{i}]"
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("name"), str)
                or not item["name"]
            ):
                problems.append(f"{where} must be an object with a name")
                continue
            name = item["name"]
            if name in seen:
                problems.append(f"{where}: input {name!r} is listed twice")
            seen.add(name)
            datatype = item.get("datatype")
            if datatype is not None:
                datatype = normalize_datatype(datatype)
                if datatype not in NP_DTYPES:
                    problems.append(
                        f"{where}.datatype {item.get('datatype')!r} is not one of "
                        f"{sorted(NP_DTYPES)}"
                    )
            source = str(item.get("from", f"data.{name}"))
            if not _source_ok(source):
                problems.append(
                    f"{where}.from {source!r} must be 'data', 'data.<path>', 'files[N]' or "
                    "'files.<name>'"
                )
            fmt = str(item.get("format", "npy")).lower()
            if fmt not in FILE_FORMATS:
                problems.append(f"{where}.format must be one of {list(FILE_FORMATS)}")
            shape = _parse_shape(item.get("shape"), where, problems)
            if shape is not None and sum(1 for d in shape if d == -1) > 1:
                # We reshape flat values with numpy, which can infer one free dimension.
                problems.append(f"{where}.shape may have at most one -1")
            inputs.append(InputSpec(name, source, datatype, shape, fmt))

        outputs: list[OutputSpec] = []
        raw_outputs = init_data.get("outputs") or []
        if not isinstance(raw_outputs, list):
            problems.append("outputs must be a list of {name, to}")
            raw_outputs = []
        for i, item in enumerate(raw_outputs):
            where = f"outputs[{i}]"
            if isinstance(item, str):
                item = {"name": item}
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("name"), str)
                or not item["name"]
            ):
                problems.append(f"{where} must be an object with a name")
                continue
            to = str(item.get("to", item["name"]))
            if not to or any(not part for part in to.split(".")):
                problems.append(f"{where}.to must be a key or a dotted path")
            fmt = str(item.get("format", "json")).lower()
            if fmt not in ("json", "npy"):
                problems.append(f"{where}.format must be 'json' or 'npy'")
            outputs.append(OutputSpec(item["name"], to, fmt))
        if problems:
            raise TritonConfigError(problems)
        return cls(
            model_name=model_name,
            inputs=inputs,
            outputs=outputs,
            protocol=protocol,
            triton_url=url,
            model_version=str(version),
            timeout_s=float(timeout_s),
            wait_for_init_s=float(wait_s),
            ssl=ssl,
            headers=dict(headers),
        )


def split_url(url: str) -> tuple[str, bool]:
    """tritonclient wants `host:port`; accept `http://`, `https://`, `grpc://` forms too."""
    url = url.strip()
    ssl = url.startswith(("https://", "grpcs://"))
    for scheme in ("http://", "https://", "grpc://", "grpcs://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return url.rstrip("/"), ssl


# -- packet -> tensors --------------------------------------------------------------------
def _bad(message: str, **details: Any) -> DataPlaneError:
    return DataPlaneError(INVALID_ARGUMENT, message, **details)


def _lookup(data: Any, source: str, name: str) -> Any:
    if source == "data":
        return data
    node = data
    walked = "data"
    for part in source.split(".")[1:]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            raise _bad(
                f"input {name!r} is read from {source}, which the request does not have "
                f"(no {part!r} in {walked})",
                input=name,
            )
        walked = f"{walked}.{part}"
    return node


def _find_file(files: list[Any], source: str, name: str) -> Any:
    if source.startswith("files["):
        idx = int(source[6:-1])
        if idx >= len(files):
            raise _bad(
                f"input {name!r} is read from {source} but the request has {len(files)} file(s)",
                input=name,
            )
        return files[idx]
    wanted = source[6:]
    for f in files:
        meta = getattr(f, "meta", None)
        if meta is None:
            try:
                meta = json.loads(f.metadata) if f.metadata else {}
            except ValueError:
                meta = {}
        if isinstance(meta, dict) and meta.get("name") == wanted:
            return f
    raise _bad(
        f"input {name!r} is read from {source} but no file has metadata name {wanted!r}",
        input=name,
    )


def _file_array(spec: InputSpec, blob: bytes, dtype: Any) -> np.ndarray:
    if spec.format == "npy":
        try:
            arr = np.load(io.BytesIO(blob), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _bad(
                f"input {spec.name!r}: the file is not a .npy array ({exc})", input=spec.name
            ) from None
        if not isinstance(arr, np.ndarray):
            raise _bad(f"input {spec.name!r}: the .npy file holds no array", input=spec.name)
        return arr
    # raw bytes
    if dtype is np.object_:
        return np.array([blob], dtype=np.object_)
    itemsize = np.dtype(dtype).itemsize
    if len(blob) % itemsize:
        raise _bad(
            f"input {spec.name!r}: {len(blob)} raw bytes are not a whole number of "
            f"{spec.datatype} values ({itemsize} bytes each)",
            input=spec.name,
        )
    return np.frombuffer(blob, dtype=dtype)


def _fits(shape: tuple[int, ...], pattern: tuple[int, ...]) -> bool:
    return len(shape) == len(pattern) and all(
        p == -1 or p == s for s, p in zip(shape, pattern, strict=True)
    )


def _shaped(arr: np.ndarray, pattern: tuple[int, ...] | None, name: str) -> np.ndarray:
    if pattern is None or _fits(arr.shape, pattern):
        return arr
    fixed = math.prod(d for d in pattern if d != -1)
    free = pattern.count(-1)
    if free > 1:
        raise _bad(
            f"input {name!r} has shape {list(arr.shape)}; the model expects {list(pattern)}",
            input=name,
        )
    if (free == 0 and arr.size != fixed) or (free == 1 and (fixed == 0 or arr.size % fixed)):
        want = f"a multiple of {fixed}" if free else str(fixed)
        raise _bad(
            f"input {name!r} has {arr.size} value(s) in shape {list(arr.shape)}; shape "
            f"{list(pattern)} needs {want}",
            input=name,
        )
    return arr.reshape(pattern)


def to_tensor(spec: InputSpec, datatype: str, value: Any = None, file: Any = None) -> np.ndarray:
    """One input tensor as numpy, converted to `datatype` and shaped to `spec.shape`."""
    dtype = NP_DTYPES[datatype]
    if file is not None:
        arr = _file_array(spec, bytes(file.file_data), dtype)
    elif dtype is np.object_:
        try:
            arr = np.array(value, dtype=np.object_)
        except ValueError as exc:
            raise _bad(f"input {spec.name!r}: not a regular array of strings ({exc})") from None
        if any(not isinstance(v, str | bytes) for v in arr.flat):
            raise _bad(
                f"input {spec.name!r} is BYTES: every element must be a string", input=spec.name
            )
    else:
        if value is None or isinstance(value, str | dict):
            kind = "nothing" if value is None else type(value).__name__
            raise _bad(
                f"input {spec.name!r} must be a number or a (nested) list of numbers for "
                f"{datatype}, got {kind}",
                input=spec.name,
            )
        try:
            arr = np.asarray(value)
        except ValueError as exc:
            raise _bad(
                f"input {spec.name!r} is not a regular (rectangular) array: {exc}", input=spec.name
            ) from None
    if dtype is not np.object_:
        if arr.dtype == np.object_ or arr.dtype.kind in "USV":
            raise _bad(
                f"input {spec.name!r} holds non-numeric values; {datatype} needs numbers",
                input=spec.name,
            )
        if arr.dtype != dtype:
            if datatype == "BOOL" and arr.dtype.kind not in "bi":
                raise _bad(f"input {spec.name!r} must be booleans", input=spec.name)
            if (
                arr.dtype.kind == "f"
                and np.dtype(dtype).kind in "iu"
                and not np.all(np.isfinite(arr) & (arr == np.round(arr)))
            ):
                raise _bad(
                    f"input {spec.name!r} has fractional values; {datatype} needs integers",
                    input=spec.name,
                )
            arr = arr.astype(dtype)
    return np.ascontiguousarray(_shaped(arr, spec.shape, spec.name))


def packet_tensors(
    specs: list[InputSpec], datatypes: dict[str, str], data: Any, files: list[Any]
) -> list[tuple[str, str, np.ndarray]]:
    """`[(name, datatype, array)]` for one packet, or INVALID_ARGUMENT saying what is wrong."""
    out = []
    for spec in specs:
        datatype = spec.datatype or datatypes.get(spec.name)
        if not datatype:
            raise DataPlaneError(
                INVALID_ARGUMENT,
                f"input {spec.name!r} has no datatype in the block config and the model's "
                "metadata does not list it",
            )
        if spec.from_file:
            out.append(
                (
                    spec.name,
                    datatype,
                    to_tensor(spec, datatype, file=_find_file(files, spec.source, spec.name)),
                )
            )
        else:
            out.append(
                (
                    spec.name,
                    datatype,
                    to_tensor(spec, datatype, value=_lookup(data, spec.source, spec.name)),
                )
            )
    return out


# -- tensors -> output ----------------------------------------------------------------------
def json_value(arr: np.ndarray) -> Any:
    """A Triton output as JSON: numbers/lists; BYTES elements decoded as UTF-8 text."""
    if arr.dtype == np.object_:
        return (
            np.vectorize(
                lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v,
                otypes=[object],
            )(arr).tolist()
            if arr.size
            else arr.tolist()
        )
    return arr.tolist()


def put_path(target: dict[str, Any], path: str, value: Any) -> None:
    node = target
    parts = path.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
