"""A use-case preset's workload (`serve_app.memory.presets`): prompt and output lengths log-normal with
the preset's mean and p95, and the preset's TTFT / TPOT as the SLO goodput is judged by.

Within a context shorter than the preset's p95 request the lengths are scaled down as the controller
sizes for them (`preset_within_context`), and each draw is clipped so that prompt + output never
exceeds the context (vLLM refuses such a request): the context is split between prompt and output in
the ratio of their p95s, so only draws beyond the p95 are clipped. Pure.
"""
from __future__ import annotations

from dataclasses import dataclass

from autoscaling.loadtest.arrivals import ArrivalSchedule
from autoscaling.loadtest.lengths import LogNormal
from autoscaling.loadtest.metrics import Slo
from autoscaling.loadtest.workload import SpecError, WorkloadSpec
from serve_app.memory.presets import UseCasePreset, get_preset
from serve_app.policy.batch_controller import preset_within_context


@dataclass(frozen=True)
class PresetWorkload:
    """A preset fitted to a context: its lengths and its SLO, under the preset's name as class."""

    preset: UseCasePreset  # as fitted to the context (lengths possibly scaled down)
    max_model_len: int
    prompt_len: LogNormal
    output_len: LogNormal

    @property
    def class_name(self) -> str:
        return self.preset.name

    @property
    def slo(self) -> Slo:
        return Slo(self.preset.ttft_s, self.preset.tpot_s)

    def spec(self, arrival: ArrivalSchedule, *, duration_s: float | None = None, num_requests: int | None = None,
             max_concurrency: int | None = None, seed: int = 0) -> WorkloadSpec:
        return WorkloadSpec(arrival=arrival, class_mix={self.class_name: 1.0}, prompt_len=self.prompt_len,
                            output_len=self.output_len, duration_s=duration_s, num_requests=num_requests,
                            max_concurrency=max_concurrency, seed=seed)

    def to_dict(self) -> dict:
        return {"preset": self.preset.name, "max_model_len": self.max_model_len,
                "prompt_len": self.prompt_len.to_dict(), "output_len": self.output_len.to_dict(),
                "slo": self.slo.to_dict()}


def context_split(preset: UseCasePreset, max_model_len: int) -> tuple[int, int]:
    """The longest prompt and the longest output a request may have: the context in the ratio of the
    (fitted) preset's p95s, so that both caps lie at or beyond their p95 and add up to the context."""
    if max_model_len < 2:
        raise SpecError(f"max_model_len must be >= 2 (a prompt token and an output token), got {max_model_len}")
    total = preset.prompt_len_p95 + preset.output_len_p95
    prompt_max = max(1, min(max_model_len - 1, max_model_len * preset.prompt_len_p95 // total))
    return prompt_max, max_model_len - prompt_max


def preset_workload(name: str, max_model_len: int) -> PresetWorkload:
    """The preset called `name` as a workload within `max_model_len` tokens of context."""
    try:
        preset = get_preset(name)
    except ValueError as error:
        raise SpecError(str(error)) from None
    fitted = preset_within_context(preset, max_model_len)
    prompt_max, output_max = context_split(fitted, max_model_len)
    return PresetWorkload(fitted, max_model_len,
                          LogNormal(fitted.prompt_len_mean, fitted.prompt_sigma, max=prompt_max),
                          LogNormal(fitted.output_len_mean, fitted.output_sigma, max=output_max))
