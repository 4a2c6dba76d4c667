"""Ship a checkpoint folder to the Hugging Face Hub: check that it is complete and loads, render
its model card for the target repo, then push it with `huggingface_hub` (or only report what
would be pushed, with `dry_run=True`).

Credentials come from `huggingface_hub` itself (`HF_TOKEN` or `hf auth login`); nothing here
takes or prints a token.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field

from .cards import write_model_card
from .data.catalog import CATALOG_FILE
from .processing import PROCESSOR_CONFIG

WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
# Trainer leftovers and partial writes never belong in a published checkpoint
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/*", "trainer_checkpoints*", "*.tmp", "*.pt", "*.pth", "*.bin", ".*"]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class UploadPlan:
    """What a push sends: the files (relative paths) and their total size in bytes."""

    directory: str
    repo_id: str
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0
    commit_url: str | None = None

    def format(self) -> str:
        lines = [f"{self.directory} -> {self.repo_id}: {len(self.files)} files, {self.total_bytes / 2**20:.1f} MiB"]
        lines += [f"  {name}" for name in self.files]
        if self.commit_url:
            lines.append(f"pushed: {self.commit_url}")
        return "\n".join(lines)


def _relative_imports(path: str) -> list[str]:
    """Same-folder modules a remote-code file imports (`from .x import ...`): transformers copies these."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    return [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module]


def check_checkpoint(directory: str) -> dict:
    """Raise a clear error unless `directory` is a complete genrec_hf checkpoint; return its config.

    Complete: config.json of a genrec_hf model, safetensors weights, every remote-code file the
    config's auto_map names (and what those import), and a processor (tokenizer, item catalog,
    settings) that loads and matches the model's catalog.
    """
    from .models import METHOD_MODELS

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is not a folder")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {directory}: not a checkpoint folder")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") not in METHOD_MODELS:
        raise ValueError(f"{directory}: model_type {config.get('model_type')!r} is not a genrec_hf model ({', '.join(METHOD_MODELS)})")
    if not any(os.path.isfile(os.path.join(directory, name)) for name in WEIGHTS):
        raise FileNotFoundError(f"no model.safetensors in {directory}: save the model with save_pretrained first")
    missing = []
    pending = sorted({ref.split(".")[0] for ref in (config.get("auto_map") or {}).values()})
    seen = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = os.path.join(directory, f"{module}.py")
        if not os.path.isfile(path):
            missing.append(f"{module}.py")
            continue
        pending.extend(_relative_imports(path))
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks the remote-code file(s) {', '.join(sorted(missing))}: without them "
            "trust_remote_code=True cannot load it; re-save the model with save_pretrained"
        )
    for name in (PROCESSOR_CONFIG, CATALOG_FILE):
        if not os.path.isfile(os.path.join(directory, name)):
            raise FileNotFoundError(f"no {name} in {directory}: save the processor into the same folder (processor.save_pretrained)")
    from .processing import SeqRecProcessor

    SeqRecProcessor.from_pretrained(directory)  # loads tokenizer + catalog, checks them against config.json
    return config


def plan_upload(directory: str, repo_id: str) -> UploadPlan:
    """The files `upload_checkpoint` would send (Trainer leftovers skipped)."""
    from huggingface_hub.utils import filter_repo_objects

    names = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        names += [os.path.relpath(os.path.join(root, f), directory).replace(os.sep, "/") for f in files]
    kept = sorted(filter_repo_objects(names, ignore_patterns=IGNORE_PATTERNS))
    size = sum(os.path.getsize(os.path.join(directory, name)) for name in kept)
    return UploadPlan(directory=directory, repo_id=repo_id, files=kept, total_bytes=size)


def upload_checkpoint(
    directory: str,
    repo_id: str,
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
    dry_run: bool = False,
    endpoint: str | None = None,
) -> UploadPlan:
    """Check `directory`, write its model card for `repo_id`, and push it (unless `dry_run`).

    The card is re-rendered in place (README.md) so the repo id in its usage snippet is right;
    nothing else in the folder changes. Returns the plan, with `commit_url` after a push.
    """
    if not REPO_ID.match(repo_id or ""):
        raise ValueError(f"repo id {repo_id!r} must look like 'user-or-org/name'")
    config = check_checkpoint(directory)
    write_model_card(directory, repo_id=repo_id)
    plan = plan_upload(directory, repo_id)
    if dry_run:
        return plan
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=directory,
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload {config['model_type']} checkpoint with genrec_hf",
        ignore_patterns=IGNORE_PATTERNS,
    )
    plan.commit_url = getattr(commit, "commit_url", None) or str(commit)
    return plan
