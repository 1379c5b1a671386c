"""Hardware metrics of one node, named as the AIOS metrics system names them (reference §1.16).

psutil gives CPU, memory, swap, disk, network and process counts; NVML (``pynvml``) gives
per-GPU memory, utilization and temperature when it is importable and a GPU exists. A node
without NVML may *declare* GPUs (for placement tests); they are reported with their declared
memory as free. Sizes are in MB, rates per second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from typing import Any

import psutil

log = logging.getLogger("aios.node_agent.hardware")

MB = 1024 * 1024


def _mb(value: float) -> int:
    return int(value // MB)


class _Nvml:
    """NVML when available; every failure downgrades to "no GPUs" instead of crashing."""

    def __init__(self) -> None:
        self.lib: Any = None
        try:
            import pynvml  # optional: not a dependency of the project

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self.lib = pynvml
        except Exception as exc:  # ImportError, NVMLError: no usable GPU here
            log.debug("event=nvml_unavailable error=%r", exc)

    def gpus(self) -> list[dict[str, Any]]:
        if self.lib is None:
            return []
        nv = self.lib
        out = []
        try:
            for index in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
                util = nv.nvmlDeviceGetUtilizationRates(handle)
                name = nv.nvmlDeviceGetName(handle)
                uuid = nv.nvmlDeviceGetUUID(handle)
                temperature = 0
                with contextlib.suppress(Exception):
                    temperature = nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)
                out.append(
                    {
                        "gpu_id": index,
                        "uuid": uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                        "modelName": name.decode() if isinstance(name, bytes) else str(name),
                        "totalMem": _mb(mem.total),
                        "usedMem": _mb(mem.used),
                        "freeMem": _mb(mem.free),
                        "memUtilization": round(100.0 * mem.used / mem.total, 2)
                        if mem.total
                        else 0.0,
                        "cudaUtilization": float(util.gpu),
                        "powerUtilization": 0.0,  # the reference keeps this a placeholder
                        "temperature": float(temperature),
                    }
                )
        except Exception as exc:
            log.warning("event=nvml_read_failed error=%r", exc)
            return []
        return out


def _vmstat_pgfault() -> int | None:
    try:
        with open("/proc/vmstat") as handle:
            for line in handle:
                if line.startswith("pgfault "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class HardwareSampler:
    """Samples the node every call; rates are deltas since the previous call."""

    def __init__(self, declared_gpus: list[dict[str, Any]] | None = None, disk_path: str = "/"):
        self.declared_gpus = declared_gpus or []
        self.disk_path = disk_path
        self.nvml = _Nvml() if not self.declared_gpus else None
        self._prev: dict[str, Any] = {}
        psutil.cpu_percent(interval=None)  # primes the counter so the first sample is real

    # -- static description (for node registration) --------------------------------------------
    def static_info(self) -> dict[str, Any]:
        """A node spec describing this machine (reference field names, MB)."""
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        disks = [p for p in psutil.disk_partitions(all=False) if p.fstype]
        size = 0
        with contextlib.suppress(OSError):
            size = psutil.disk_usage(self.disk_path).total
        interfaces = sorted(n for n in psutil.net_if_addrs() if n != "lo")
        return {
            "vcpus": {"count": psutil.cpu_count(logical=True) or 1},
            "memory": _mb(memory.total),
            "swap": _mb(swap.total),
            "storage": {"disks": max(1, len(disks)), "size": _mb(size)},
            "network": {"interfaces": len(interfaces), "txBandwidth": 0, "rxBandwidth": 0},
            "gpus": self.gpu_spec(),
            "nodeMetadata": {"hostname": socket.gethostname()},
        }

    def gpu_spec(self) -> dict[str, Any]:
        gpus = self.gpu_list()
        return {
            "count": len(gpus),
            "memory": sum(g["totalMem"] for g in gpus),
            "gpus": [
                {"modelName": g["modelName"], "memory": g["totalMem"], "uuid": g.get("uuid", "")}
                for g in gpus
            ],
            "modelNames": sorted({g["modelName"] for g in gpus if g["modelName"]}),
        }

    def gpu_list(self) -> list[dict[str, Any]]:
        if self.declared_gpus:
            return [
                {
                    "gpu_id": row.get("index", i),
                    "modelName": row.get("model", ""),
                    "totalMem": int(row.get("memory_mb", 0)),
                    "usedMem": 0,
                    "freeMem": int(row.get("memory_mb", 0)),
                    "memUtilization": 0.0,
                    "cudaUtilization": 0.0,
                    "powerUtilization": 0.0,
                    "temperature": 0.0,
                    "declared": True,
                }
                for i, row in enumerate(self.declared_gpus)
            ]
        return self.nvml.gpus() if self.nvml else []

    # -- live sample --------------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        now = time.time()
        prev = self._prev
        elapsed = max(1e-3, now - prev.get("ts", now - 1.0))
        load1, load5, load15 = os.getloadavg()
        running = total_threads = total_procs = 0
        for proc in psutil.process_iter(["status", "num_threads"]):
            total_procs += 1
            info = proc.info
            total_threads += info.get("num_threads") or 0
            if info.get("status") == psutil.STATUS_RUNNING:
                running += 1
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        faults = _vmstat_pgfault()
        fault_rate = (
            (faults - prev["faults"]) / elapsed
            if faults is not None and prev.get("faults") is not None
            else 0.0
        )
        try:
            usage = psutil.disk_usage(self.disk_path)
        except OSError:
            usage = None
        sizes = []
        for part in psutil.disk_partitions(all=False):
            with contextlib.suppress(OSError):
                sizes.append(psutil.disk_usage(part.mountpoint).total)
        io = psutil.disk_io_counters()
        net = psutil.net_io_counters()
        io_now = {
            "ops": (io.read_count + io.write_count) if io else 0,
            "busy": getattr(io, "busy_time", 0) if io else 0,
            "time": (io.read_time + io.write_time) if io else 0,
        }
        io_prev = prev.get("io") or io_now
        ops = max(0, io_now["ops"] - io_prev["ops"])
        gpus = self.gpu_list()
        doc: dict[str, Any] = {
            "ts": now,
            "vcpu": {
                "count": psutil.cpu_count(logical=True) or 1,
                "utilization": psutil.cpu_percent(interval=None),
                "load_1m": round(load1, 3),
                "load_5m": round(load5, 3),
                "load_15m": round(load15, 3),
                "load1m": round(load1, 3),
                "load5m": round(load5, 3),
                "load15m": round(load15, 3),
                "runningThreads": running,
                "runningProcesses": running,
                "totalThreads": total_threads,
                "totalProcesses": total_procs,
            },
            "memory": {
                "totalMem": _mb(memory.total),
                "freeMem": _mb(memory.available),
                "usedMem": _mb(memory.total - memory.available),
                "averageUtil": memory.percent,
                "totalSwap": _mb(swap.total),
                "usedSwap": _mb(swap.used),
                "freeSwap": _mb(swap.free),
                "pageFaultsPerSec": round(max(0.0, fault_rate), 2),
            },
            "disk": {
                "memory": {
                    "totalMem": _mb(usage.total) if usage else 0,
                    "freeMem": _mb(usage.free) if usage else 0,
                    "usedMem": _mb(usage.used) if usage else 0,
                    "maxDisk": _mb(max(sizes)) if sizes else 0,
                    "minDisk": _mb(min(sizes)) if sizes else 0,
                },
                "iops": {
                    "readBytes": io.read_bytes if io else 0,
                    "writeBytes": io.write_bytes if io else 0,
                    "total": io_now["ops"],
                    "blocksPerSec": round(ops / elapsed, 2),
                    "active": round(max(0, io_now["busy"] - io_prev["busy"]) / elapsed / 10, 2),
                    "response": round(max(0, io_now["time"] - io_prev["time"]) / ops, 3)
                    if ops
                    else 0.0,
                },
            },
            "storage": {
                "totalMem": _mb(usage.total) if usage else 0,
                "freeMem": _mb(usage.free) if usage else 0,
                "usedMem": _mb(usage.used) if usage else 0,
            },
            "network": {
                "txBytesTotal": net.bytes_sent,
                "rxBytesTotal": net.bytes_recv,
                "txBytesPerSec": round(
                    max(0, net.bytes_sent - prev.get("tx", net.bytes_sent)) / elapsed, 1
                ),
                "rxBytesPerSec": round(
                    max(0, net.bytes_recv - prev.get("rx", net.bytes_recv)) / elapsed, 1
                ),
            },
            "gpus": gpu_aggregate(gpus, source="declared" if self.declared_gpus else "nvml"),
        }
        self._prev = {
            "ts": now,
            "faults": faults,
            "io": io_now,
            "tx": net.bytes_sent,
            "rx": net.bytes_recv,
        }
        return doc


def gpu_aggregate(gpus: list[dict[str, Any]], source: str = "nvml") -> dict[str, Any]:
    """The node GPU aggregate of the reference, with the per-GPU list under ``gpus``."""
    count = len(gpus)

    def avg(key: str) -> float:
        return round(sum(float(g.get(key) or 0) for g in gpus) / count, 2) if count else 0.0

    return {
        "count": count,
        "totalMem": sum(int(g.get("totalMem") or 0) for g in gpus),
        "totalUsedMem": sum(int(g.get("usedMem") or 0) for g in gpus),
        "totalFreeMem": sum(int(g.get("freeMem") or 0) for g in gpus),
        "avgMemUtilization": avg("memUtilization"),
        "avgCudaUtilization": avg("cudaUtilization"),
        "avgPowerUtilization": avg("powerUtilization"),
        "avgTemperature": avg("temperature"),
        "source": source if count else "none",
        "gpus": gpus,
    }
