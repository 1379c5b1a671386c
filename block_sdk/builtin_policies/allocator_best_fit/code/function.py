"""Built-in best-fit allocator: ``clusterAllocator`` and ``resourceAllocator`` in one policy.

Hooks (reference §3.3 #4, #4b, #5, #5b, #6), chosen by ``input_data["action"]`` (or
``parameters["action"]``; a message with ``cluster_data`` and ``inputs`` is the ad-hoc
allocator):

``selection``     in  ``{"filter_result": [cluster doc + "capacity"]}``
                  out ``{"clusters": [cluster ids, best first]}`` — clusters that cannot
                  hold even one instance are dropped; at most ``settings.max_candidates``
                  (default 10; 0 = all), fewest usable GPUs first (best fit).
``dry_run``       in  ``{"payload": {"block", "cluster", "cluster_metrics", "healthy_nodes",
                  "instances", "requirements"}}``
                  out ``{"selection_score_data": {"score": 0..1, "node_info": {"node_id",
                  "gpus"}, "placements": [{"node_id", "gpus", "score"}], "reason"}}``;
                  score 0 = the ``instances`` do not all fit.
``post_dry_run``  in  ``{"clusters": [{"cluster_id", "score_data": {...}}]}``
                  out the element with the highest score > 0 (``{}`` when none).
``allocation`` / ``scale`` / ``reassignment``
                  in  the ``dry_run`` payload (``reassignment`` also ``exclude_nodes`` or
                  ``current_node_id``)
                  out ``{"node_id", "gpus", "score", "placements": [...]}`` for the
                  requested instances (``{"node_id": None, "reason"}`` when they do not fit).
ad hoc            in  ``{"cluster_data": {cid: {"data", "cluster_metrics", "nodes"}},
                  "inputs": <requirements>}``
                  out ``{"cluster_id", "node_id", "gpus", "score"}``.

A node (``healthy_nodes[]``) is ``{"node_id", "vcpus": {"count", "free"}, "memory":
{"total", "free"}, "load_15m", "gpus": [{"index", "model", "memory_mb", "shared",
"exclusive_taken", "shared_reserved_mb", "free_memory_mb", "utilization"}]}`` (MB, and
utilization in 0..1 or null).

Requirements (``parameters`` or ``payload.requirements``; AIOS names accepted): ``gpus``
(per instance), ``min_gpu_free_memory`` (MB per GPU), ``max_gpu_utilization`` (0..1),
``gpu_model``, ``shared_gpu``, ``vcpus``, ``memory`` (MB). ``strategy``: ``best_fit``
(default: the tightest node that fits, keeping large GPUs free for large blocks) or
``worst_fit`` (spread: the emptiest node).
"""

from __future__ import annotations

from typing import Any

EPS = 1e-9
# Clusters dry-run per decision unless settings.max_candidates says otherwise (0 = all).
MAX_CANDIDATES = 10


def _num(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def requirements(parameters: dict[str, Any], extra: dict[str, Any] | None = None) -> dict:
    source = {**(parameters or {}), **(extra or {})}

    def first(*names: str, default: Any = None) -> Any:
        for name in names:
            if source.get(name) is not None:
                return source[name]
        return default

    util = first("max_gpu_utilization", "maxGpuUtilization")
    util = _num(util) if util is not None else None
    if util is not None and util > 1:
        util = util / 100.0  # given as a percentage
    return {
        "gpus": int(_num(first("gpus", "gpu_count", "gpuCount", default=0))),
        "gpu_memory_mb": int(
            _num(first("min_gpu_free_memory", "gpu_memory_mb", "gpuMemory", default=0))
        ),
        "max_gpu_utilization": util,
        "gpu_model": first("gpu_model", "gpuModel"),
        "shared_gpu": bool(first("shared_gpu", "sharedGpu", default=False)),
        "vcpus": _num(first("vcpus", "cpus", "cpu", default=0)),
        "memory_mb": int(_num(first("memory_mb", "memory", default=0))),
    }


class AIOSv1PolicyRule:
    def __init__(self, rule_id: str, settings: Any, parameters: Any) -> None:
        self.rule_id = rule_id
        self.settings = settings if isinstance(settings, dict) else {}
        self.parameters = parameters if isinstance(parameters, dict) else {}

    # -- entry ---------------------------------------------------------------------------------
    def eval(self, parameters: Any, input_data: Any, context: Any) -> Any:
        params = {**self.parameters, **(parameters if isinstance(parameters, dict) else {})}
        if not isinstance(input_data, dict):
            raise ValueError("input_data must be an object")
        action = input_data.get("action") or params.get("action")
        if not action and "cluster_data" in input_data:
            action = "adhoc"
        handlers = {
            "selection": self.selection,
            "dry_run": self.dry_run,
            "post_dry_run": self.post_dry_run,
            "allocation": self.allocation,
            "scale": self.allocation,
            "reassignment": self.allocation,
            "adhoc": self.adhoc,
        }
        if action not in handlers:
            raise ValueError(f"unknown action {action!r}; known: {sorted(handlers)}")
        return handlers[action](params, input_data)

    def management(self, action: str, data: Any) -> dict[str, Any]:
        if action == "get_state":
            return {"settings": self.settings, "parameters": self.parameters}
        raise ValueError(f"unknown management action {action!r}; known: get_state")

    # -- clusterAllocator ----------------------------------------------------------------------
    def selection(self, params: dict, input_data: dict) -> dict[str, Any]:
        req = requirements(params, input_data.get("requirements"))
        ranked = []
        for doc in input_data.get("filter_result") or []:
            if isinstance(doc, str):
                ranked.append((0.0, doc))
                continue
            cid = doc.get("id") or doc.get("cluster_id")
            if not cid or doc.get("status", "live") not in ("live",):
                continue
            cap = doc.get("capacity") or {}
            if cap:
                if cap.get("healthy_nodes", 1) <= 0:
                    continue
                if req["gpus"] and cap.get("usable_gpus", 0) < req["gpus"]:
                    continue
                if req["gpu_memory_mb"] and cap.get("max_gpu_free_mb", 0) < req["gpu_memory_mb"]:
                    continue
                if cap.get("max_free_vcpus", req["vcpus"]) + EPS < req["vcpus"]:
                    continue
                if cap.get("max_free_memory_mb", req["memory_mb"]) < req["memory_mb"]:
                    continue
            # Best fit across clusters too: the fewest usable GPUs (or free CPUs) first.
            ranked.append((cap.get("usable_gpus", 0) * 1000 + cap.get("max_free_vcpus", 0), cid))
        ranked.sort(key=lambda item: item[0])
        limit = int(
            _num(self.settings.get("max_candidates", params.get("max_candidates", MAX_CANDIDATES)))
        )
        ids = [cid for _, cid in ranked]
        return {"clusters": ids[:limit] if limit > 0 else ids}

    def post_dry_run(self, params: dict, input_data: dict) -> dict[str, Any]:
        best, best_score = {}, 0.0
        for entry in input_data.get("clusters") or []:
            score = _num(((entry or {}).get("score_data") or {}).get("score"))
            if score > best_score + EPS:
                best, best_score = entry, score
        return best

    # -- resourceAllocator ---------------------------------------------------------------------
    def dry_run(self, params: dict, input_data: dict) -> dict[str, Any]:
        payload = input_data.get("payload") or {}
        placements, reason = self._place(params, payload)
        if not placements:
            return {"selection_score_data": {"score": 0.0, "node_info": {}, "reason": reason}}
        score = round(sum(p["score"] for p in placements) / len(placements), 4)
        return {
            "selection_score_data": {
                "score": score,
                "node_info": {"node_id": placements[0]["node_id"], "gpus": placements[0]["gpus"]},
                "placements": placements,
            }
        }

    def allocation(self, params: dict, input_data: dict) -> dict[str, Any]:
        payload = input_data.get("payload") or {}
        if input_data.get("action") == "reassignment" or params.get("action") == "reassignment":
            payload = dict(payload)
            exclude = list(payload.get("exclude_nodes") or [])
            if payload.get("current_node_id"):
                exclude.append(payload["current_node_id"])
            payload["exclude_nodes"] = exclude
        placements, reason = self._place(params, payload)
        if not placements:
            return {"node_id": None, "gpus": [], "reason": reason}
        return {
            "node_id": placements[0]["node_id"],
            "gpus": placements[0]["gpus"],
            "score": placements[0]["score"],
            "placements": placements,
        }

    def adhoc(self, params: dict, input_data: dict) -> dict[str, Any]:
        inputs = input_data.get("inputs") or {}
        best: dict[str, Any] = {}
        reasons = []
        for cid, entry in (input_data.get("cluster_data") or {}).items():
            payload = {
                "healthy_nodes": (entry or {}).get("nodes") or [],
                "requirements": inputs,
                "instances": inputs.get("instances", 1),
            }
            placements, reason = self._place(params, payload)
            if not placements:
                reasons.append(f"{cid}: {reason}")
                continue
            if placements[0]["score"] > best.get("score", 0.0):
                best = {
                    "cluster_id": cid,
                    "node_id": placements[0]["node_id"],
                    "gpus": placements[0]["gpus"],
                    "score": placements[0]["score"],
                }
        if not best:
            return {"cluster_id": None, "node_id": None, "gpus": [], "reason": "; ".join(reasons)}
        return best

    # -- placement ------------------------------------------------------------------------------
    def _place(self, params: dict, payload: dict) -> tuple[list[dict], str]:
        req = requirements(params, payload.get("requirements"))
        instances = max(1, int(_num(payload.get("instances", params.get("instances", 1)), 1)))
        strategy = str(params.get("strategy") or self.settings.get("strategy") or "best_fit")
        exclude = set(payload.get("exclude_nodes") or [])
        # Shallow copies: _consume replaces (never mutates) the parts it changes, so the
        # caller's payload stays as it was.
        nodes = [
            dict(n) for n in payload.get("healthy_nodes") or [] if n.get("node_id") not in exclude
        ]
        if not nodes:
            return [], "no healthy, schedulable node"
        placements: list[dict] = []
        last_reason = ""
        for _ in range(instances):
            best = None
            for node in nodes:
                option, reason = self._fit(node, req, strategy)
                if option is None:
                    last_reason = f"node {node.get('node_id')}: {reason}"
                    continue
                if best is None or option["score"] > best[0]["score"] + EPS:
                    best = (option, node)
            if best is None:
                got = len(placements)
                return [], (
                    f"{got} of {instances} instance(s) fit; {last_reason}"
                    if got
                    else last_reason or "nothing fits"
                )
            option, node = best
            self._consume(node, option, req)
            placements.append(option)
        return placements, ""

    def _usable(self, gpu: dict, req: dict) -> bool:
        if req["gpu_model"] and str(gpu.get("model", "")).lower() != str(req["gpu_model"]).lower():
            return False
        if gpu.get("exclusive_taken"):
            return False
        util = gpu.get("utilization")
        limit = req["max_gpu_utilization"]
        if limit is not None and util is not None and _num(util) > limit + EPS:
            return False
        free = _num(gpu.get("free_memory_mb"))
        if req["shared_gpu"]:
            return bool(gpu.get("shared")) and free + EPS >= req["gpu_memory_mb"]
        return _num(gpu.get("shared_reserved_mb")) <= 0 and free + EPS >= req["gpu_memory_mb"]

    def _fit(self, node: dict, req: dict, strategy: str) -> tuple[dict | None, str]:
        vcpus, memory = node.get("vcpus") or {}, node.get("memory") or {}
        free_cpu, total_cpu = _num(vcpus.get("free")), _num(vcpus.get("count"))
        free_mem, total_mem = _num(memory.get("free")), _num(memory.get("total"))
        if free_cpu + EPS < req["vcpus"]:
            return None, f"{free_cpu:g} free vCPUs < {req['vcpus']:g}"
        if free_mem + EPS < req["memory_mb"]:
            return None, f"{free_mem:g} MB free memory < {req['memory_mb']} MB"
        chosen: list[dict] = []
        gpu_fit = 1.0
        if req["gpus"]:
            usable = [g for g in node.get("gpus") or [] if self._usable(g, req)]
            if len(usable) < req["gpus"]:
                return None, (
                    f"{len(usable)} usable GPU(s) < {req['gpus']} "
                    f"(≥{req['gpu_memory_mb']} MB free each"
                    + (f", model {req['gpu_model']}" if req["gpu_model"] else "")
                    + (", shared" if req["shared_gpu"] else "")
                    + ")"
                )
            usable.sort(
                key=lambda g: (_num(g.get("free_memory_mb")), g.get("index", 0)),
                reverse=strategy == "worst_fit",
            )
            chosen = usable[: req["gpus"]]
            fits = []
            for gpu in chosen:
                total = max(_num(gpu.get("memory_mb")), EPS)
                left = _num(gpu.get("free_memory_mb")) - req["gpu_memory_mb"]
                fits.append(1.0 - max(0.0, left) / total)
            gpu_fit = sum(fits) / len(fits)
        cpu_fit = 1.0 - (free_cpu - req["vcpus"]) / total_cpu if total_cpu > 0 else 1.0
        mem_fit = 1.0 - (free_mem - req["memory_mb"]) / total_mem if total_mem > 0 else 1.0
        if req["gpus"]:
            tightness = 0.6 * gpu_fit + 0.2 * cpu_fit + 0.2 * mem_fit
        else:
            tightness = 0.5 * cpu_fit + 0.5 * mem_fit
        tightness = min(1.0, max(0.0, tightness))
        score = tightness if strategy != "worst_fit" else 1.0 - tightness
        # Feasible placements score in [0.01, 1]; 0 is reserved for "does not fit".
        score = round(0.01 + 0.99 * score, 4)
        return {
            "node_id": node.get("node_id"),
            "gpus": [g.get("index") for g in chosen],
            "score": score,
        }, ""

    @staticmethod
    def _consume(node: dict, option: dict, req: dict) -> None:
        vcpus, memory = dict(node.get("vcpus") or {}), dict(node.get("memory") or {})
        vcpus["free"] = _num(vcpus.get("free")) - req["vcpus"]
        memory["free"] = _num(memory.get("free")) - req["memory_mb"]
        node["vcpus"], node["memory"] = vcpus, memory
        gpus = []
        for gpu in node.get("gpus") or []:
            if gpu.get("index") in option["gpus"]:
                gpu = dict(gpu)
                if req["shared_gpu"]:
                    gpu["free_memory_mb"] = _num(gpu.get("free_memory_mb")) - req["gpu_memory_mb"]
                    gpu["shared_reserved_mb"] = (
                        _num(gpu.get("shared_reserved_mb")) + req["gpu_memory_mb"]
                    )
                else:
                    gpu["exclusive_taken"] = True
            gpus.append(gpu)
        node["gpus"] = gpus
