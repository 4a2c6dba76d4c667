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
from .models.saving import INCOMPLETE_MARKER
from .processing import PROCESSOR_CONFIG

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# Trainer leftovers, logs (tensorboard run names carry the host name), hidden files and partial
# writes never belong in a published checkpoint
IGNORE_PATTERNS = [
    "checkpoint-*", "trainer_checkpoints*", "runs/*", "*.tmp", "*.pt", "*.pth", "*.bin", ".*", "*/.*",
]
# remote files a push replaces wholesale: stale weights or code from an earlier push must not
# survive next to the new ones (e.g. an old model.safetensors beside a new shard index)
DELETE_PATTERNS = ["*.safetensors", WEIGHTS_INDEX, "*.py"]
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
    """Same-folder modules a remote-code file imports (`from .x import ...`, `from . import x`):
    transformers copies these next to it."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            modules += [node.module] if node.module else [alias.name for alias in node.names]
    return modules


def _weight_files(directory: str) -> list[str]:
    """The safetensors files the checkpoint's weights live in, each checked to open."""
    from safetensors import safe_open

    index = os.path.join(directory, WEIGHTS_INDEX)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f).get("weight_map", {}).values()))
        missing = [name for name in files if not os.path.isfile(os.path.join(directory, name))]
        if not files or missing:
            raise FileNotFoundError(f"{WEIGHTS_INDEX} in {directory} names shard(s) that are not there: {', '.join(missing) or 'none listed'}")
    elif os.path.isfile(os.path.join(directory, WEIGHTS)):
        files = [WEIGHTS]
    else:
        raise FileNotFoundError(f"no {WEIGHTS} in {directory}: save the model with save_pretrained first")
    for name in files:
        try:
            with safe_open(os.path.join(directory, name), framework="pt") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own error types for a damaged header
            raise ValueError(f"{os.path.join(directory, name)} is not a readable safetensors file ({err})") from err
    return files


def check_checkpoint(directory: str) -> dict:
    """Raise a clear error unless `directory` is a complete genrec_hf checkpoint; return its config.

    Complete: config.json of a genrec_hf model, safetensors weights, a processor (tokenizer, item
    catalog, settings) that loads and matches the model's catalog (and, for generative models, the
    item-text tables saved with the weights), and every remote-code file the auto_map of
    config.json (the model) and of processor_config.json (AutoProcessor) names, with what those
    import (LANCER: cosine.py and trie.py next to modeling_lancer.py; RecSysGLM: trie.py).
    """
    from .models import METHOD_MODELS

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is not a folder")
    if os.path.isfile(os.path.join(directory, INCOMPLETE_MARKER)):
        raise ValueError(f"{directory} is an unfinished save (the process writing it stopped before it was complete): "
                         "upload the folder it was being saved as, or save again")
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {directory}: not a checkpoint folder")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") not in METHOD_MODELS:
        raise ValueError(f"{directory}: model_type {config.get('model_type')!r} is not a genrec_hf model ({', '.join(METHOD_MODELS)})")
    _weight_files(directory)
    for name in (PROCESSOR_CONFIG, CATALOG_FILE):
        if not os.path.isfile(os.path.join(directory, name)):
            raise FileNotFoundError(f"no {name} in {directory}: save the processor into the same folder (processor.save_pretrained)")
    with open(os.path.join(directory, PROCESSOR_CONFIG), encoding="utf-8") as f:
        processor_auto_map = json.load(f).get("auto_map") or {}
    if "AutoProcessor" not in processor_auto_map:
        raise ValueError(
            f"{PROCESSOR_CONFIG} in {directory} names no AutoProcessor remote code, so Hub users without genrec_hf "
            "could not build inputs: re-save the processor (SeqRecProcessor.from_pretrained(folder).save_pretrained(folder))"
        )
    missing = []
    pending = sorted({ref.split(".")[0] for ref in [*(config.get("auto_map") or {}).values(), *processor_auto_map.values()]})
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
            "trust_remote_code=True cannot load it; re-save the model and processor with save_pretrained"
        )
    from .processing import SeqRecProcessor

    processor = SeqRecProcessor.from_pretrained(directory)  # loads tokenizer + catalog, checks them against config.json
    _check_item_tables(directory, processor)
    return config


# item-text tables generative models save with their weights (GenRec's trie; LANCER's trie, cosine
# mapping and item vectors) -> the processor method that builds them
ITEM_TABLES = {"item_token_ids": "item_token_table", "item_detail_ids": "item_detail_table"}


def _check_item_tables(directory: str, processor) -> None:
    """The item tables in the weights must be the processor's (same texts, same tokenizer) and set:
    a model saved before `set_catalog` / `set_item_tokens` cannot recommend."""
    import torch
    from safetensors import safe_open

    for file in _weight_files(directory):
        with safe_open(os.path.join(directory, file), framework="pt") as f:
            for name in [n for n in ITEM_TABLES if n in set(f.keys())]:  # in a fixed order
                if not hasattr(processor, ITEM_TABLES[name]):
                    continue
                stored, table = f.get_tensor(name), getattr(processor, ITEM_TABLES[name])()
                width = table.shape[1]
                if bool((stored[:, 0] < 0).all()):
                    raise ValueError(f"{directory}: the model's {name} table is empty: set the catalog "
                                     "(model.set_catalog / set_item_tokens with the processor's tables) before saving")
                if (width > stored.shape[1] or stored.shape[0] != table.shape[0] or not torch.equal(stored[:, :width], table)
                        or bool((stored[:, width:] >= 0).any())):
                    raise ValueError(f"{directory}: the model's {name} table is not the processor's "
                                     f"{ITEM_TABLES[name]}(): item texts or tokenizer differ; save the processor the model was built with")


def plan_upload(directory: str, repo_id: str) -> UploadPlan:
    """The files `upload_checkpoint` would send (Trainer leftovers skipped)."""
    from huggingface_hub.utils import filter_repo_objects

    names = []
    for root, dirs, files in os.walk(directory):
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
    `private=True` refuses to push into an existing public repo (it would stay public).
    `revision`: a branch, created from main when it does not exist.
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
    if private and not api.repo_info(repo_id, repo_type="model").private:
        raise ValueError(f"{repo_id} already exists and is public: make it private on the Hub first, or push without --private")
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        folder_path=directory,
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload {config['model_type']} checkpoint with genrec_hf",
        ignore_patterns=IGNORE_PATTERNS,
        delete_patterns=DELETE_PATTERNS,
    )
    plan.commit_url = getattr(commit, "commit_url", None) or str(commit)
    return plan
