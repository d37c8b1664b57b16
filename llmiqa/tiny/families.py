"""The model families llmiqa is tested with, as one table: README's models table is
`table()`, and tests/raters/test_families.py (transformers) and tests/vllm/ (vLLM) check
each row's claims on a tiny random checkpoint of that family. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    key: str  # its tiny builder in tiny_families.BUILDERS (or the golden checkpoint)
    name: str
    architecture: str  # the transformers class
    checkpoint: str  # a common checkpoint of the family
    params: float  # that checkpoint's parameters in billions, computed (benchmarks/model_sizes.py)
    template: str  # the chat template the tests use
    vllm: str  # "served" (agrees with transformers within 1e-5, tests/vllm), or why not
    notes: str = ""

    @property
    def bf16_gb(self) -> float:
        """Weights alone in bf16 (2 bytes a parameter): activations, the KV cache and SAM2
        come on top."""
        return 2 * self.params


XINFERENCE = "published (xinference 4.1.0 copy)"
TRANSFORMERS_TESTS = "published (transformers' processor tests)"

FAMILIES: tuple[Family, ...] = (
    Family("qwen2_vl", "Qwen2-VL", "Qwen2VLForConditionalGeneration",
           "Qwen/Qwen2-VL-7B-Instruct", 8.291, XINFERENCE, "served",
           "default system turn when none is given"),
    Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration",
           "Qwen/Qwen2.5-VL-7B-Instruct", 8.292, XINFERENCE, "served",
           "the default model"),
    Family("qwen3_vl", "Qwen3-VL", "Qwen3VLForConditionalGeneration",
           "Qwen/Qwen3-VL-8B-Instruct", 8.767, XINFERENCE, "served"),
    Family("gemma3", "Gemma 3", "Gemma3ForConditionalGeneration", "google/gemma-3-12b-it",
           12.187, XINFERENCE, "refused on CPU (its attention there is causal over image "
           "tokens; GPU not measured)",
           "system text merged into the user turn; gated licence"),
    Family("internvl", "InternVL 3 (-hf)", "InternVLForConditionalGeneration",
           "OpenGVLab/InternVL3-8B-hf", 7.944, "published (transformers' -hf converter)",
           "served", "the transformers-native checkpoints only (not the remote-code ones)"),
    Family("llava", "LLaVA-1.5", "LlavaForConditionalGeneration", "llava-hf/llava-1.5-7b-hf",
           7.063, "llava-1.5-hf's (llmiqa.tiny)", "served"),
    Family("llava_onevision", "LLaVA-OneVision", "LlavaOnevisionForConditionalGeneration",
           "llava-hf/llava-onevision-qwen2-7b-ov-hf", 8.031, TRANSFORMERS_TESTS, "served",
           "writes the image before the text of its turn"),
    Family("smolvlm", "SmolVLM2", "SmolVLMForConditionalGeneration",
           "HuggingFaceTB/SmolVLM2-2.2B-Instruct", 2.247, "transformers (in code)", "served",
           "needs `pip install num2words`; answers after `Assistant:` (no space)"),
    Family("idefics3", "SmolVLM (Idefics3)", "Idefics3ForConditionalGeneration",
           "HuggingFaceTB/SmolVLM-Instruct", 2.246, TRANSFORMERS_TESTS, "served"),
    Family("mistral3", "Mistral 3", "Mistral3ForConditionalGeneration",
           "mistralai/Mistral-Small-3.1-24B-Instruct-2503", 24.011, TRANSFORMERS_TESTS,
           "served", "without a system turn its template writes today's date (warned)"),
    Family("mllama", "Llama 3.2 Vision", "MllamaForConditionalGeneration",
           "meta-llama/Llama-3.2-11B-Vision-Instruct", 10.670,
           "published (swift-jinja's copy)", "not served by vLLM since 0.10.2",
           "no system turn beside an image: the standard goes in the user turn"),
    Family("glm4v", "GLM-4.1V", "Glm4vForConditionalGeneration",
           "zai-org/GLM-4.1V-9B-Thinking", 10.293, "published (hub revision 3c1471e)",
           "served", "the Thinking model opens its answer with <think>"),
    Family("mplug_owl3", "mPLUG-Owl3 (the paper's)", "MplugOwl3Model",
           "mPLUG/mPLUG-Owl3-7B-240728", 8.031, "the original processor's, ported",
           "not served by vLLM (remote code only)", "llmiqa's own port, no remote code; "
           "checked against the original code's outputs"),
)  # fmt: skip


def table() -> str:
    """README's models table."""
    rows = [
        "| family | transformers class | checkpoint (parameters; bf16 weights, computed) "
        "| chat template in the tests | batched | vLLM | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in FAMILIES:
        size = f"{f.params:.1f} B; {f.bf16_gb:.1f} GB"
        rows.append(
            f"| {f.name} | `{f.architecture}` | `{f.checkpoint}` ({size}) | {f.template} "
            f"| yes | {f.vllm} | {f.notes} |"
        )
    return "\n".join(rows)
