"""A block that takes its time: each request sleeps `delay_s` seconds (or burns CPU).

Use it to watch queueing, back-pressure and the autoscaler: send a burst, see queue lengths
grow, instances get added, and removed again when the burst is over.

Parameters (live through `on_update`): `delay_s` (default 0.5), `max_delay_s` (default 30,
the cap a request may ask for), `busy` (default false: sleep; true: spin the CPU for the
delay, for CPU-based autoscaling). A request may set its own `{"delay_s": ...}` (capped).
Output: `{"slept_s", "instance_id", "processed", "input"}`.
"""

from __future__ import annotations

import json
import time

from aios_instance import Block, OnDataResult, PreProcessResult


class SlowBlock:
    def __init__(self, context):
        self.context = context
        params = context.block_init_parameters
        self.delay_s = float(params.get("delay_s", 0.5))
        self.max_delay_s = float(params.get("max_delay_s", 30.0))
        self.busy = bool(params.get("busy", False))
        self.instance_id = getattr(context, "instance_id", "")
        self.processed = 0

    def on_preprocess(self, packet):
        data = packet.data
        if isinstance(data, str):
            try:
                data = json.loads(data) if data else {}
            except ValueError as exc:
                return False, f"data is not JSON: {exc}"
        if not isinstance(data, dict):
            return False, "slow expects a JSON object as data"
        delay = data.get("delay_s", self.delay_s)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            return False, "delay_s must be a number >= 0"
        delay = min(float(delay), self.max_delay_s)
        return True, [PreProcessResult(packet=packet, extra_data={"input": data, "delay": delay})]

    def on_data(self, entry):
        delay = entry.extra_data["delay"]
        start = time.perf_counter()
        if self.busy:
            while time.perf_counter() - start < delay:
                pass
        else:
            time.sleep(delay)
        self.processed += 1
        return True, OnDataResult(
            output={
                "slept_s": round(time.perf_counter() - start, 4),
                "instance_id": self.instance_id,
                "processed": self.processed,
                "input": entry.extra_data["input"],
            }
        )

    def on_update(self, updated_parameters):
        for key in ("delay_s", "max_delay_s"):
            if key in updated_parameters:
                value = updated_parameters[key]
                if not isinstance(value, int | float) or value < 0:
                    return False, f"{key} must be a number >= 0"
                setattr(self, key, float(value))
        if "busy" in updated_parameters:
            self.busy = bool(updated_parameters["busy"])
        return True, updated_parameters

    def health(self):
        return {"status": "healthy", "processed": self.processed, "delay_s": self.delay_s}

    def management(self, action, data):
        if action == "get_delay":
            return {"delay_s": self.delay_s, "busy": self.busy}
        if action == "set_delay":
            ok, result = self.on_update(data or {})
            return {"ok": ok, "result": result}
        return {"message": f"unknown action: {action}", "actions": ["get_delay", "set_delay"]}

    def get_muxer(self):
        return None


if __name__ == "__main__":
    Block(SlowBlock).run()
