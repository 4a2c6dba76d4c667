"""hub_upload / `genrec-hf upload`: checks, card, and the push itself against a fake Hub endpoint."""

import base64
import json
import shutil

import pytest

from genrec_hf.cli import main as cli
from genrec_hf.hub import check_checkpoint, upload_checkpoint
from genrec_hf.training.recipes import save_checkpoint

ENDPOINT = "https://hub.invalid"


@pytest.fixture
def checkpoint(st2si_factory, tmp_path):
    model, processor = st2si_factory()
    folder = tmp_path / "ckpt"
    save_checkpoint(model, processor, str(folder), info={"method": "st2si", "dataset": {"source": "toy"},
                                                         "test": {"hr@10": 0.25, "ndcg@10": 0.125}})
    (folder / "checkpoint-7").mkdir()  # a Trainer leftover that must not be pushed
    (folder / "checkpoint-7" / "optimizer.pt").write_bytes(b"0" * 64)
    return folder


@pytest.fixture
def fake_hub(monkeypatch):
    """Route huggingface_hub's HTTP client to an in-process fake Hub; record what it receives.

    The repo "org/st2si-toy" already holds an earlier push (`remote_files`); `public` makes it an
    existing public repo."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http, httpx

    received = {"routes": [], "files": {}, "deleted": [], "branches": [], "public": False,
                "remote_files": ["model-00001-of-00002.safetensors", "old_helper.py", "config.json", ".gitattributes"]}
    repo = "org/st2si-toy"

    def handler(request):
        path = request.url.path
        received["routes"].append((request.method, path))
        if path == "/api/repos/create":
            received["create"] = json.loads(request.content)
            if received["public"]:
                return httpx.Response(409, json={"error": "You already created this model repo", "url": f"{ENDPOINT}/{repo}"})
            return httpx.Response(200, json={"url": f"{ENDPOINT}/{repo}"})
        if path == f"/api/models/{repo}":
            return httpx.Response(200, json={"id": repo, "private": not received["public"], "sha": "b" * 40})
        if path.startswith(f"/api/models/{repo}/tree/"):
            return httpx.Response(200, json=[{"type": "file", "path": p, "size": 1, "oid": "c" * 40} for p in received["remote_files"]])
        if path.startswith(f"/api/models/{repo}/branch/"):
            received["branches"].append(path.rsplit("/", 1)[1])
            return httpx.Response(200, json={})
        if path.endswith("/validate-yaml"):
            return httpx.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            received["commit_revision"] = path.rsplit("/", 1)[1]
            for line in request.content.decode().splitlines():  # NDJSON: header, then one op per file
                op = json.loads(line)
                if op["key"] == "file":
                    received["files"][op["value"]["path"]] = base64.b64decode(op["value"]["content"])
                elif op["key"] == "deletedFile":
                    received["deleted"].append(op["value"]["path"])
            return httpx.Response(200, json={"commitUrl": f"{ENDPOINT}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})
        return httpx.Response(404, json={"error": f"fake hub has no route {request.method} {path}"})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    default_factory = _http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(handler)))
    yield received
    huggingface_hub.set_client_factory(default_factory)  # also closes the fake session


def test_upload_pushes_the_checkpoint_and_its_card(checkpoint, fake_hub):
    (checkpoint / "runs").mkdir()  # a tensorboard log (its name carries the host name)
    (checkpoint / "runs" / "events.out.tfevents.1.host").write_bytes(b"log")
    plan = upload_checkpoint(str(checkpoint), "org/st2si-toy", private=True, endpoint=ENDPOINT)
    created = fake_hub["create"]
    assert created["name"] == "st2si-toy" and created["organization"] == "org"
    assert created.get("visibility") == "private" or created.get("private") is True  # field name differs by hub version
    pushed = fake_hub["files"]
    for name in ("config.json", "model.safetensors", "modeling_st2si.py", "configuration_st2si.py", "saving.py", "scoring.py", "losses.py",
                 "item_catalog.json", "processor_config.json", "tokenizer.json", "README.md",
                 "processing_st2si.py", "processing_base.py", "catalog.py"):  # the processor's remote code
        assert name in pushed, name
    assert not any(name.startswith(("checkpoint-", "runs")) for name in pushed)
    assert pushed["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
    card = pushed["README.md"].decode()
    assert "org/st2si-toy" in card and "model-index" in card and "0.125" in card
    assert plan.commit_url.endswith("a" * 40) and sorted(pushed) == plan.files
    # stale weights and code from the earlier push go; other files are overwritten or kept
    assert sorted(fake_hub["deleted"]) == ["model-00001-of-00002.safetensors", "old_helper.py"]
    assert fake_hub["commit_revision"] == "main" and fake_hub["branches"] == []


def test_upload_to_a_branch_creates_it(checkpoint, fake_hub):
    upload_checkpoint(str(checkpoint), "org/st2si-toy", revision="ablation-1", endpoint=ENDPOINT)
    assert fake_hub["branches"] == ["ablation-1"] and fake_hub["commit_revision"] == "ablation-1"


def test_private_upload_into_an_existing_public_repo_is_refused(checkpoint, fake_hub):
    fake_hub["public"] = True
    with pytest.raises(ValueError, match="already exists and is public"):
        upload_checkpoint(str(checkpoint), "org/st2si-toy", private=True, endpoint=ENDPOINT)
    assert fake_hub["files"] == {}  # nothing was pushed
    upload_checkpoint(str(checkpoint), "org/st2si-toy", endpoint=ENDPOINT)  # a public push is fine
    assert "model.safetensors" in fake_hub["files"]


def test_dry_run_checks_and_lists_without_network(checkpoint, capsys):
    assert cli(["upload", str(checkpoint), "--repo-id", "org/st2si-toy", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "checkpoint-7" not in out and "nothing pushed" in out
    assert "org/st2si-toy" in (checkpoint / "README.md").read_text()


def test_incomplete_checkpoints_are_refused_by_name(checkpoint, tmp_path, capsys, st2si_factory, catalog):
    assert check_checkpoint(str(checkpoint))["model_type"] == "st2si"
    assert cli(["upload", str(checkpoint), "--repo-id", "no-slash", "--dry-run"]) == 2
    assert "must look like 'user-or-org/name'" in capsys.readouterr().err

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "configuration_st2si.py").unlink()  # imported by modeling_st2si.py
    with pytest.raises(FileNotFoundError, match="remote-code file\\(s\\) configuration_st2si.py"):
        check_checkpoint(str(broken))
    shutil.copy(checkpoint / "configuration_st2si.py", broken)
    (broken / "processing_base.py").unlink()  # imported by processing_st2si.py, which processor_config.json names
    with pytest.raises(FileNotFoundError, match="remote-code file\\(s\\) processing_base.py"):
        check_checkpoint(str(broken))
    shutil.copy(checkpoint / "processing_base.py", broken)
    config = json.loads((broken / "processor_config.json").read_text())
    (broken / "processor_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "auto_map"}))
    with pytest.raises(ValueError, match="names no AutoProcessor remote code"):
        check_checkpoint(str(broken))
    shutil.copy(checkpoint / "processor_config.json", broken)
    (broken / "item_catalog.json").unlink()
    with pytest.raises(FileNotFoundError, match="no item_catalog.json"):
        check_checkpoint(str(broken))
    (broken / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        check_checkpoint(str(broken))
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        check_checkpoint(str(broken))

    # a processor for another catalog next to the weights: refused before anything is pushed
    from genrec_hf import SeqRecProcessor
    from genrec_hf.data import ItemCatalog

    mismatched = tmp_path / "mismatched"
    shutil.copytree(checkpoint, mismatched)
    _, processor = st2si_factory()
    bigger = ItemCatalog([str(i) for i in range(len(catalog) + 2)], [{"title": f"x {i}"} for i in range(len(catalog) + 2)])
    SeqRecProcessor(processor.tokenizer, bigger).save_pretrained(mismatched)
    assert cli(["upload", str(mismatched), "--repo-id", "org/x", "--dry-run"]) == 2
    assert "catalog size mismatch" in capsys.readouterr().err
    assert cli(["upload", str(tmp_path / "nowhere"), "--repo-id", "org/x", "--dry-run"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_sharded_checkpoints_need_every_shard(checkpoint, st2si_factory):
    model, _ = st2si_factory()
    (checkpoint / "model.safetensors").unlink()
    model.save_pretrained(checkpoint, max_shard_size="40KB")
    shards = sorted(checkpoint.glob("model-*.safetensors"))
    assert len(shards) > 1 and (checkpoint / "model.safetensors.index.json").is_file()
    assert check_checkpoint(str(checkpoint))["model_type"] == "st2si"
    shards[1].unlink()
    with pytest.raises(FileNotFoundError, match=f"names shard\\(s\\) that are not there: {shards[1].name}"):
        check_checkpoint(str(checkpoint))


def build_lancer(catalog, variant: str = "full", set_catalog: bool = True):
    """A tiny LANCER model + processor (random 2-layer Llama, width 64); nothing trained."""
    import torch
    from transformers import AutoModelForCausalLM

    from genrec_hf import LancerForSeqRec, SeqRecProcessor
    from genrec_hf.backbones import tiny_config, train_tokenizer
    from genrec_hf.processing import LANCER_DEFAULTS

    torch.manual_seed(0)
    tokenizer = train_tokenizer(catalog.texts() + [LANCER_DEFAULTS["instruction"], " ->"], vocab_size=400)
    processor = SeqRecProcessor(tokenizer, catalog, method="lancer", variant=variant, max_items=4)
    lm = AutoModelForCausalLM.from_config(tiny_config(
        "llama", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id))
    model = LancerForSeqRec.from_lm(lm, len(catalog), processor.separator_ids, history_slots=4, num_knowledge_tokens=5,
                                    prompt_hidden_size=32, decode="trie", beam_size=4)
    if set_catalog:
        model.set_catalog(processor.item_token_table(), processor.item_detail_table())
    return model, processor


@pytest.fixture
def lancer_checkpoint(catalog, tmp_path):
    model, processor = build_lancer(catalog)
    folder = tmp_path / "lancer"
    save_checkpoint(model, processor, str(folder), info={"method": "lancer", "dataset": {"source": "toy"},
                                                         "test": {"hr@5": 0.25, "ndcg@10": 0.125}})
    return folder


def test_a_lancer_checkpoint_passes_the_checks_and_dry_run(lancer_checkpoint, capsys):
    assert check_checkpoint(str(lancer_checkpoint))["model_type"] == "lancer"
    assert cli(["upload", str(lancer_checkpoint), "--repo-id", "org/lancer-toy", "--dry-run"]) == 0
    listed = {line.strip() for line in capsys.readouterr().out.splitlines()}
    remote_code = {"configuration_lancer.py", "modeling_lancer.py", "cosine.py", "trie.py", "saving.py",  # the model's
                   "processing_lancer.py", "processing_base.py", "catalog.py"}  # the processor's
    assert remote_code | {"model.safetensors", "config.json", "processor_config.json", "item_catalog.json", "README.md"} <= listed
    card = (lancer_checkpoint / "README.md").read_text()
    assert "org/lancer-toy" in card and "LANCER sequential recommender" in card and "0.125" in card


@pytest.mark.parametrize("missing", ["cosine.py", "trie.py", "configuration_lancer.py", "processing_base.py"])
def test_a_lancer_checkpoint_without_its_same_folder_code_is_refused(lancer_checkpoint, missing):
    (lancer_checkpoint / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"remote-code file\\(s\\) {missing}"):
        check_checkpoint(str(lancer_checkpoint))


def test_a_lancer_checkpoint_must_carry_the_processors_item_tables(catalog, tmp_path, capsys):
    model, processor = build_lancer(catalog, set_catalog=False)  # set_catalog never called: it cannot recommend
    save_checkpoint(model, processor, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="item_token_ids table is empty: set the catalog"):
        check_checkpoint(str(tmp_path / "empty"))
    # weights of the full variant beside the processor of the id variant (other item texts)
    model, _ = build_lancer(catalog)
    _, other = build_lancer(catalog, variant="id")
    save_checkpoint(model, other, str(tmp_path / "mixed"))
    assert cli(["upload", str(tmp_path / "mixed"), "--repo-id", "org/x", "--dry-run"]) == 2
    assert "item_token_ids table is not the processor's item_token_table()" in capsys.readouterr().err


def build_recsys_glm_toy(catalog, kind: str = "glm", set_catalog: bool = True, **settings):
    """A tiny RecSysGLM model + processor (random 2-layer GLM or Llama, width 64); nothing trained."""
    import torch

    from genrec_hf import SeqRecProcessor
    from genrec_hf.backbones import load_glm_backbone
    from genrec_hf.processing import RECSYS_GLM_DEFAULTS
    from genrec_hf.training.recipes import build_recsys_glm

    torch.manual_seed(0)
    texts = catalog.texts() + [RECSYS_GLM_DEFAULTS["instruction"], RECSYS_GLM_DEFAULTS["separator"]]
    backbone, tokenizer, _ = load_glm_backbone("glm-tiny" if kind == "glm" else "tiny", texts=texts)
    processor = SeqRecProcessor(tokenizer, catalog, method="recsys_glm", max_items=4, **settings)
    model = build_recsys_glm(backbone, processor, beam_size=5).eval()
    if not set_catalog:
        model.item_token_ids.fill_(-1)
    return model, processor


@pytest.fixture
def recsys_glm_checkpoint(catalog, tmp_path):
    model, processor = build_recsys_glm_toy(catalog)
    folder = tmp_path / "recsys_glm"
    save_checkpoint(model, processor, str(folder), info={"method": "recsys_glm", "dataset": {"source": "toy"},
                                                         "test": {"hr@5": 0.25, "ndcg@10": 0.125}})
    return folder


def test_a_recsys_glm_checkpoint_passes_the_checks_and_dry_run(recsys_glm_checkpoint, capsys):
    assert check_checkpoint(str(recsys_glm_checkpoint))["model_type"] == "recsys_glm"
    assert cli(["upload", str(recsys_glm_checkpoint), "--repo-id", "org/recsys-glm-toy", "--dry-run"]) == 0
    listed = {line.strip() for line in capsys.readouterr().out.splitlines()}
    remote_code = {"configuration_recsys_glm.py", "modeling_recsys_glm.py", "trie.py", "saving.py", "losses.py",  # the model's
                   "processing_recsys_glm.py", "processing_base.py", "catalog.py"}  # the processor's
    assert remote_code | {"model.safetensors", "config.json", "processor_config.json", "item_catalog.json", "README.md"} <= listed
    card = (recsys_glm_checkpoint / "README.md").read_text()
    assert "org/recsys-glm-toy" in card and "RecSysGLM sequential recommender" in card and "0.125" in card
    (recsys_glm_checkpoint / "trie.py").unlink()  # imported by modeling_recsys_glm.py
    with pytest.raises(FileNotFoundError, match="remote-code file\\(s\\) trie.py"):
        check_checkpoint(str(recsys_glm_checkpoint))


def test_a_recsys_glm_checkpoint_must_carry_the_processors_item_table(catalog, tmp_path, capsys):
    model, processor = build_recsys_glm_toy(catalog, set_catalog=False)
    save_checkpoint(model, processor, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="item_token_ids table is empty: set the catalog"):
        check_checkpoint(str(tmp_path / "empty"))
    model, _ = build_recsys_glm_toy(catalog)
    _, other = build_recsys_glm_toy(catalog, max_item_tokens=2)  # item texts cut shorter: another table
    save_checkpoint(model, other, str(tmp_path / "mixed"))
    assert cli(["upload", str(tmp_path / "mixed"), "--repo-id", "org/x", "--dry-run"]) == 2
    assert "item_token_ids table is not the processor's item_token_table()" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["glm", "llama"])
def test_a_recsys_glm_checkpoint_reloads_through_the_auto_classes_with_the_same_recommendations(catalog, tmp_path, kind):
    import torch
    from transformers import AutoModel, AutoProcessor

    from genrec_hf import RecSysGLMForInfilling, SeqRecPipeline
    from genrec_hf.models import RecSysGLMProcessor

    model, processor = build_recsys_glm_toy(catalog, kind)
    save_checkpoint(model, processor, str(tmp_path / kind))
    loaded, loaded_processor = AutoModel.from_pretrained(tmp_path / kind), AutoProcessor.from_pretrained(tmp_path / kind)
    assert type(loaded) is RecSysGLMForInfilling and type(loaded_processor) is RecSysGLMProcessor  # the package's classes
    histories = [[1, 2, 3], [4, 5], [7, 1, 9, 11, 0]]
    inputs, loaded_inputs = processor(histories), loaded_processor(histories)
    assert all(torch.equal(inputs[k], loaded_inputs[k]) for k in inputs)
    expected = model.recommend(**inputs, top_k=5, exclude_history=True)
    got = loaded.eval().recommend(**loaded_inputs, top_k=5, exclude_history=True)
    assert torch.equal(got.item_ids, expected.item_ids) and torch.equal(got.scores, expected.scores)
    assert bool((got.item_ids[:, 0] >= 0).all())  # history items excluded: a list may be shorter than 5
    pipeline = SeqRecPipeline.from_pretrained(tmp_path / kind)  # what evaluate / recommend load
    assert torch.equal(pipeline.recommend(histories, top_k=5).item_ids, expected.item_ids)
    # a processor built for the ablation cannot drive a model with dynamic positions
    _, ablation = build_recsys_glm_toy(catalog, kind, dynamic_positions=False)
    with pytest.raises(ValueError, match="dynamic_positions mismatch"):
        SeqRecPipeline(loaded, ablation)


def test_merged_recsys_glm_and_lancer_checkpoints_load_as_remote_code_without_peft(catalog, tmp_path, run_without_genrec_hf):
    """transformers' check_imports refuses a remote-code file that imports a missing package anywhere,
    methods included, unless inside a try block: a merged RecSysGLM checkpoint and a LANCER one
    (no adapters) must load where neither genrec_hf nor peft can be imported."""
    import textwrap

    import torch

    model, processor = build_recsys_glm_toy(catalog, "llama")
    model.enable_lora(r=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    model.merge_lora()
    lancer, lancer_processor = build_lancer(catalog)
    histories = [[1, 2, 3], [4, 5]]
    expected = {}
    for name, (m, proc) in {"recsys_glm": (model, processor), "lancer": (lancer, lancer_processor)}.items():
        save_checkpoint(m, proc, str(tmp_path / name))
        expected[name] = m.eval().recommend(**proc(histories), top_k=3).item_ids
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import importlib.util, sys
        sys.modules["genrec_hf"] = None
        sys.modules["peft"] = None  # as if not installed: find_spec says None, importing raises
        assert importlib.util.find_spec("peft") is None
        import torch
        from transformers import AutoModel, AutoProcessor
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
        for name in ("recsys_glm", "lancer"):
            folder = {str(tmp_path)!r} + "/" + name
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
            assert "genrec_hf" not in type(model).__module__ and "genrec_hf" not in type(processor).__module__
            got = model.recommend(**processor({histories!r}), top_k=3).item_ids
            assert torch.equal(got, expected[name]), (name, got, expected[name])
        assert "peft" not in {{m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}}
        print("loaded without peft")
    """)
    run_without_genrec_hf(script, "loaded without peft")
