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
    """Route huggingface_hub's HTTP client to an in-process fake Hub; record what it receives."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http, httpx

    received = {"routes": [], "files": {}}

    def handler(request):
        path = request.url.path
        received["routes"].append((request.method, path))
        if path == "/api/repos/create":
            received["create"] = json.loads(request.content)
            repo = f"{received['create'].get('organization')}/{received['create']['name']}"
            return httpx.Response(200, json={"url": f"{ENDPOINT}/{repo}"})
        if path.endswith("/validate-yaml"):
            return httpx.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            for line in request.content.decode().splitlines():  # NDJSON: header, then one op per file
                op = json.loads(line)
                if op["key"] == "file":
                    received["files"][op["value"]["path"]] = base64.b64decode(op["value"]["content"])
            return httpx.Response(200, json={"commitUrl": f"{ENDPOINT}/org/st2si-toy/commit/{'a' * 40}",
                                             "commitOid": "a" * 40})
        return httpx.Response(404, json={"error": f"fake hub has no route {request.method} {path}"})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    default_factory = _http._GLOBAL_CLIENT_FACTORY
    huggingface_hub.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(handler)))
    yield received
    huggingface_hub.set_client_factory(default_factory)  # also closes the fake session


def test_upload_pushes_the_checkpoint_and_its_card(checkpoint, fake_hub):
    plan = upload_checkpoint(str(checkpoint), "org/st2si-toy", private=True, endpoint=ENDPOINT)
    created = fake_hub["create"]
    assert created["name"] == "st2si-toy" and created["organization"] == "org"
    assert created.get("visibility") == "private" or created.get("private") is True  # field name differs by hub version
    pushed = fake_hub["files"]
    for name in ("config.json", "model.safetensors", "modeling_st2si.py", "configuration_st2si.py",
                 "item_catalog.json", "processor_config.json", "tokenizer.json", "README.md"):
        assert name in pushed, name
    assert not any(name.startswith("checkpoint-") for name in pushed)
    assert pushed["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
    card = pushed["README.md"].decode()
    assert "org/st2si-toy" in card and "model-index" in card and "0.125" in card
    assert plan.commit_url.endswith("a" * 40) and sorted(pushed) == plan.files


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
    (broken / "item_catalog.json").unlink()
    with pytest.raises(FileNotFoundError, match="no item_catalog.json"):
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
