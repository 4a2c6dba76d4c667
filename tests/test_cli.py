import json
import re

import pytest

from genrec_hf.cli import main


def test_data_stats_prints_raw_and_filtered(capsys):
    assert main(["data", "stats", "ml-100k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["raw"] == out["filtered"] == {"users": 943, "items": 1682, "interactions": 100000, "avg_length": 106.0445}
    assert main(["data", "stats", "ml-100k", "--k-core", "30"]) == 0
    text = capsys.readouterr().out
    assert "raw" in text and "filtered" in text and "k_core=30" in text


def test_evaluate_popularity_prints_metrics_and_stats(capsys):
    assert main(["evaluate", "--method", "popularity", "--dataset", "ml-100k", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "interactions" in text and "100000" in text
    for name in ("hr@1", "hr@10", "ndcg@10", "mrr"):
        assert name in text
    assert main(["evaluate", "--method", "popularity", "--json", "--no-progress", "--split", "valid"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "valid" and out["num_users"] == 943
    assert 0 < out["metrics"]["hr@20"] < 1


def test_cli_errors_are_clear(capsys, tmp_path):
    assert main(["data", "stats", str(tmp_path / "missing.csv")]) == 2
    assert "neither a built-in name" in capsys.readouterr().err
    bad = tmp_path / "seq.txt"
    bad.write_text("1 1 2 3\n1 4 5 6\n")
    assert main(["data", "stats", str(bad), "--format", "p5"]) == 2
    assert "line 2: user '1' appears on two lines" in capsys.readouterr().err


def test_train_evaluate_recommend_tiny(tmp_path, capsys):
    out_dir = tmp_path / "ckpt"
    args = ["train", "--method", "st2si", "--backbone", "tiny", "--output-dir", str(out_dir), "--limit-users", "15",
            "--max-items", "5", "--max-steps", "2", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "best validation" in text and "split=test users=15" in text
    for name in ("config.json", "model.safetensors", "item_catalog.json", "processor_config.json", "README.md",
                 "training_info.json", "modeling_st2si.py"):
        assert (out_dir / name).is_file(), name
    info = json.loads((out_dir / "training_info.json").read_text())
    assert info["dataset"]["source"] == "ml-100k" and info["test"]["users"] == 15
    assert "model-index" in (out_dir / "README.md").read_text()
    assert not (out_dir / "trainer_checkpoints").exists()

    # a second run into the same folder must not destroy the saved checkpoint
    weights = (out_dir / "model.safetensors").read_bytes()
    assert main(args) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (out_dir / "model.safetensors").read_bytes() == weights

    assert main(["evaluate", str(out_dir), "--split", "valid", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "valid" and result["num_users"] == 943

    assert main(["recommend", str(out_dir), "--user", "7", "--top-k", "4", "--exclude-history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(1 for line in lines if line.strip()[:2] in {"1.", "2.", "3.", "4."}) == 4
    assert main(["recommend", str(out_dir), "--user", "nobody"]) == 2
    assert "unknown user 'nobody'" in capsys.readouterr().err

    # seen items are left out by default (as in the quickstart); --include-history brings them back
    from genrec_hf.data import load_sequences

    data = load_sequences("ml-100k")
    seen = {data.catalog.original_id(i) for i in data.sequences["7"]}
    num_unseen = len(data.catalog) - len(set(data.sequences["7"]))
    assert main(["recommend", str(out_dir), "--user", "7", "--top-k", "100000"]) == 0
    text = capsys.readouterr().out
    assert "note: --top-k 100000 is more than the catalog's 1682 items" in text
    assert f"top-{num_unseen} (unseen; 1682 asked, only {num_unseen} unseen items returned):" in text
    listed = [m.group(1) for m in re.finditer(r"^ *\d+\. +(\S+) ", text, flags=re.M)]
    assert len(listed) == num_unseen and not seen & set(listed)
    assert main(["recommend", str(out_dir), "--user", "7", "--top-k", "1682", "--include-history"]) == 0
    text = capsys.readouterr().out
    assert "top-1682 (seen items included):" in text and "note:" not in text


def test_checkpoint_path_is_checked_first(tmp_path, capsys):
    missing = tmp_path / "no-such-ckpt"
    for command in (["recommend", str(missing), "--user", "7"], ["evaluate", str(missing), "--no-progress"],
                    ["recommend", str(missing), "--user", "7", "--dataset", "ml-100k"]):
        assert main(command) == 2
        assert capsys.readouterr().err.strip() == f"error: checkpoint folder not found: {missing}"
    for command in (["recommend", str(tmp_path), "--user", "7"], ["evaluate", str(tmp_path), "--no-progress"]):
        assert main(command) == 2
        assert capsys.readouterr().err.strip() == f"error: {tmp_path} is not a checkpoint folder (no config.json)"


TRAIN = ["train", "--method", "st2si", "--output-dir", "unused"]


@pytest.mark.parametrize("argv,option,allowed", [
    (["recommend", "ckpt", "--top-k", "0"], "--top-k", "an integer >= 1"),
    (["recommend", "ckpt", "--top-k", "-5"], "--top-k", "an integer >= 1"),
    (["recommend", "ckpt", "--top-k", "ten"], "--top-k", "an integer >= 1"),
    (["recommend", "ckpt", "--k-core", "-1"], "--k-core", "an integer >= 0"),
    (["evaluate", "--batch-size", "0"], "--batch-size", "an integer >= 1"),
    (["evaluate", "--max-history", "0"], "--max-history", "an integer >= 1"),
    (["evaluate", "--top-k", "-1"], "--top-k", "an integer >= 1"),
    (["evaluate", "--num-beams", "0"], "--num-beams", "an integer >= 1"),
    (["data", "stats", "ml-100k", "--k-core", "1.5"], "--k-core", "an integer >= 0"),
    (TRAIN + ["--epochs", "0"], "--epochs", "a number > 0"),
    (TRAIN + ["--epochs", "nan"], "--epochs", "a number > 0"),
    (TRAIN + ["--max-steps", "0"], "--max-steps", "an integer >= 1, or -1 for no limit"),
    (TRAIN + ["--learning-rate", "-0.001"], "--learning-rate", "a number > 0"),
    (TRAIN + ["--batch-size", "0"], "--batch-size", "an integer >= 1"),
    (TRAIN + ["--max-items", "0"], "--max-items", "an integer >= 1"),
    (TRAIN + ["--seed", "-1"], "--seed", "an integer from 0 to 2**32-1"),
    (TRAIN + ["--limit-users", "0"], "--limit-users", "an integer >= 1"),
    (TRAIN + ["--max-item-tokens", "0"], "--max-item-tokens", "an integer >= 1"),
    (TRAIN + ["--windows", "0"], "--windows", "random | last | all or an integer N >= 1"),
    (TRAIN + ["--windows", "randon"], "--windows", "random | last | all or an integer N >= 1"),
    (TRAIN + ["--early-stopping-patience", "-1"], "--early-stopping-patience", "an integer >= 0"),
    (TRAIN + ["--id-embedding-scale", "0"], "--id-embedding-scale", "a number > 0"),
    (TRAIN + ["--pretrain-epochs", "-1"], "--pretrain-epochs", "a number >= 0"),
    (TRAIN + ["--pretrain-max-steps", "-2"], "--pretrain-max-steps", "an integer >= 1, or -1 for no limit"),
    (TRAIN + ["--unknown-user-prob", "1.5"], "--unknown-user-prob", "a number from 0 to 1"),
    (TRAIN + ["--beam-size", "0"], "--beam-size", "an integer >= 1"),
    (TRAIN + ["--eval-every", "0"], "--eval-every", "a number > 0"),
])
def test_numeric_options_are_validated(argv, option, allowed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"error: argument {option}: expected {allowed}, got {argv[-1]!r}")


def test_numeric_options_accept_their_bounds():
    from genrec_hf.cli import build_parser

    args = build_parser().parse_args(TRAIN + ["--max-steps", "-1", "--pretrain-epochs", "0", "--unknown-user-prob", "1",
                                              "--windows", "3", "--seed", "0", "--epochs", "0.5"])
    assert (args.max_steps, args.pretrain_epochs, args.unknown_user_prob, args.windows, args.seed, args.epochs) == (
        -1, 0.0, 1.0, "3", 0, 0.5)
    defaults = build_parser().parse_args(TRAIN)
    from genrec_hf.cli import _training_config

    # unset, the method's own defaults apply: ST2SI's paper settings, RecBole's for the ID models
    assert (defaults.windows, defaults.early_stopping_patience, defaults.id_embedding_scale) == (None, None, 1.0)
    defaults.backbone = "tiny"
    st2si = _training_config(defaults)
    assert (st2si.windows, st2si.early_stopping_patience) == ("random", 5)
    sasrec = _training_config(build_parser().parse_args(["train", "--method", "sasrec", "--output-dir", "unused"]))
    assert (sasrec.windows, sasrec.early_stopping_patience, sasrec.epochs, sasrec.learning_rate) == ("all", 10, 300.0, 1e-3)

    defaults.backbone, defaults.early_stopping_patience = "tiny", 0
    assert _training_config(defaults).early_stopping_patience == 0  # the flag reaches the recipe
    assert build_parser().parse_args(["recommend", "ckpt"]).include_history is False
    assert build_parser().parse_args(["recommend", "ckpt", "--include-history"]).include_history is True
    assert build_parser().parse_args(["evaluate", "ckpt"]).exclude_history is False  # the protocol's default


def test_evaluate_checkpoint_on_another_catalog_is_refused(tmp_path, capsys):
    out_dir = tmp_path / "ckpt"
    assert main(["train", "--method", "st2si", "--backbone", "tiny", "--output-dir", str(out_dir), "--limit-users", "5",
                 "--max-items", "3", "--max-steps", "1", "--no-progress", "--skip-test"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out_dir), "--dataset", "ml-100k", "--k-core", "50", "--no-progress"]) == 2
    assert "catalog mismatch" in capsys.readouterr().err


def test_train_genrec_selects_on_validation_ranking(tmp_path, capsys):
    out_dir = tmp_path / "genrec"
    assert main(["train", "--method", "genrec", "--backbone", "tiny", "--output-dir", str(out_dir), "--limit-users", "12",
                 "--pretrain-max-steps", "1", "--max-steps", "2", "--beam-size", "5", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "valid beams 1.0000" in text  # the trie keeps every beam on the catalog
    info = json.loads((out_dir / "training_info.json").read_text())
    assert info["method"] == "genrec" and info["validation"]["users"] == 12
    assert info["validation"]["valid_ratio"] == 1.0 and "ndcg@10" in info["validation"]
    for name in ("trie.py", "modeling_genrec.py", "item_catalog.json", "README.md"):
        assert (out_dir / name).is_file(), name
    assert main(["recommend", str(out_dir), "--user", "3", "--top-k", "3"]) == 0
    assert "top-3" in capsys.readouterr().out
    assert main(["evaluate", str(out_dir), "--split", "valid", "--unconstrained", "--top-k", "5", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["valid_ratio"] <= 1.0 and result["num_users"] == 943
    assert main(["upload", str(out_dir), "--repo-id", "me/genrec", "--dry-run"]) == 0  # its item table is the processor's
    assert "nothing pushed" in capsys.readouterr().out


LANCER_TINY = ["--backbone", "tiny", "--lm-layers", "1", "--limit-users", "12", "--max-steps", "2", "--eval-users", "4", "--beam-size", "3",
               "--max-item-tokens", "8", "--num-knowledge-tokens", "5", "--prompt-hidden-size", "32", "--no-progress"]


def test_train_evaluate_recommend_lancer_tiny(tmp_path, capsys):
    out_dir = tmp_path / "lancer"
    assert main(["train", "--method", "lancer", "--output-dir", str(out_dir), *LANCER_TINY]) == 0
    text = capsys.readouterr().out
    # the test evaluation lists as many items as validation did (the beams), decoded the same way
    assert "split=test users=12 top-3 lists from generation (decode=cosine)" in text
    config = json.loads((out_dir / "config.json").read_text())
    assert config["model_type"] == "lancer" and config["decode"] == "cosine" and config["beam_size"] == 3
    assert config["text_config"]["num_hidden_layers"] == 1  # --lm-layers
    info = json.loads((out_dir / "training_info.json").read_text())
    assert info["method"] == "lancer" and info["validation"]["users"] == 4 and info["test"]["users"] == 12
    assert info["training"]["max_items"] == 10 and info["training"]["num_knowledge_tokens"] == 5  # lancer's default window
    assert "stage1" in info["stages"] and "stage2" not in info["stages"]
    for name in ("modeling_lancer.py", "cosine.py", "trie.py", "processing_lancer.py", "item_catalog.json", "README.md"):
        assert (out_dir / name).is_file(), name
    assert not (out_dir / "trainer_checkpoints").exists()

    # evaluate: top-k defaults to the checkpoint's beams; --decode / --strategy reach LANCER's recommend
    assert main(["evaluate", str(out_dir), "--decode", "trie", "--limit-users", "3", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_users"] == 3 and result["settings"]["top_k"] == 3 and result["valid_ratio"] == 1.0
    assert result["settings"]["generation"] == {"decode": "trie", "strategy": "beam_search"}

    assert main(["recommend", str(out_dir), "--user", "7", "--top-k", "3", "--strategy", "greedy"]) == 0
    text = capsys.readouterr().out
    assert "LANCER: cosine decoding, greedy, 1 generated text(s); scores: cosine similarity" in text
    titles = re.findall(r"^ *\d+\. +\S+  (.*)  \(-?[\d.]+\)$", text, flags=re.M)
    assert len(titles) == 3 and all(titles)  # greedy + cosine ranks the catalog by similarity to one text

    assert main(["evaluate", str(out_dir), "--unconstrained", "--no-progress"]) == 2
    assert "--unconstrained is GenRec's" in capsys.readouterr().err

    # --init-from continues the saved run: same weights to start from, no knowledge stage
    more = tmp_path / "lancer-more"
    assert main(["train", "--method", "lancer", "--output-dir", str(more), "--init-from", str(out_dir), "--skip-test",
                 *[a for a in LANCER_TINY if a not in ("--lm-layers", "1")]]) == 0
    info = json.loads((more / "training_info.json").read_text())
    assert info["training"]["init_from"] == "lancer"  # the folder's name, never the machine's path
    assert json.loads((more / "config.json").read_text())["text_config"]["num_hidden_layers"] == 1


def test_lancer_options_on_other_checkpoints_are_clear_errors(tmp_path, capsys, st2si_factory):
    from genrec_hf.training.recipes import save_checkpoint

    model, processor = st2si_factory()
    folder = tmp_path / "st2si"
    save_checkpoint(model, processor, str(folder), info={"method": "st2si", "dataset": {"source": "ml-100k"}})
    capsys.readouterr()
    for command, flags in ((["evaluate", str(folder), "--decode", "trie"], "--decode applies"),
                           (["evaluate", str(folder), "--strategy", "greedy", "--decode", "cosine"], "--decode and --strategy apply"),
                           (["recommend", str(folder), "--user", "7", "--decode", "cosine"], "--decode applies")):
        assert main(command) == 2
        assert capsys.readouterr().err.strip() == f"error: {flags} only to LANCER checkpoints; {folder} holds a st2si model"
    assert main(["evaluate", str(folder), "--num-beams", "4"]) == 2
    assert "--num-beams applies only to generative checkpoints" in capsys.readouterr().err
    assert main(["evaluate", "--method", "popularity", "--decode", "trie", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == "error: --decode applies only to generative checkpoints, not --method popularity"


LANCER_TRAIN = ["train", "--method", "lancer", "--output-dir", "unused"]


@pytest.mark.parametrize("argv,option,allowed", [
    (LANCER_TRAIN + ["--knowledge-epochs", "-1"], "--knowledge-epochs", "a number >= 0"),
    (LANCER_TRAIN + ["--stage1-epochs", "0"], "--stage1-epochs", "a number > 0"),
    (LANCER_TRAIN + ["--stage2-epochs", "inf"], "--stage2-epochs", "a number > 0"),
    (LANCER_TRAIN + ["--stage2-learning-rate", "0"], "--stage2-learning-rate", "a number > 0"),
    (LANCER_TRAIN + ["--eval-users", "0"], "--eval-users", "an integer >= 1"),
    (LANCER_TRAIN + ["--lora-r", "0"], "--lora-r", "an integer >= 1"),
    (LANCER_TRAIN + ["--lora-alpha", "x"], "--lora-alpha", "an integer >= 1"),
    (LANCER_TRAIN + ["--num-knowledge-tokens", "0"], "--num-knowledge-tokens", "an integer >= 1"),
    (LANCER_TRAIN + ["--prompt-hidden-size", "-8"], "--prompt-hidden-size", "an integer >= 1"),
    (LANCER_TRAIN + ["--lm-layers", "0"], "--lm-layers", "an integer >= 1"),
    (["evaluate", "ckpt", "--limit-users", "0"], "--limit-users", "an integer >= 1"),
    (["recommend", "ckpt", "--num-beams", "0"], "--num-beams", "an integer >= 1"),
])
def test_lancer_numeric_options_are_validated(argv, option, allowed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: argument {option}: expected {allowed}, got {argv[-1]!r}")


@pytest.mark.parametrize("argv,option", [
    (LANCER_TRAIN + ["--stage2", "half"], "--stage2"),
    (LANCER_TRAIN + ["--variant", "titles"], "--variant"),
    (LANCER_TRAIN + ["--decode", "beam"], "--decode"),
    (LANCER_TRAIN + ["--loss-on", "all"], "--loss-on"),
    (["evaluate", "ckpt", "--decode", "greedy"], "--decode"),
    (["evaluate", "ckpt", "--strategy", "top_k"], "--strategy"),
    (["recommend", "ckpt", "--strategy", "beam"], "--strategy"),
    (["train", "--output-dir", "unused", "--method", "recsysglm"], "--method"),
])
def test_lancer_choices_are_validated(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}: invalid choice: {argv[-1]!r}" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--epochs", "3"], "--epochs is not used by lancer, which trains in stages: give --knowledge-epochs, "
                        "--stage1-epochs and/or --stage2-epochs"),
    (["--windows", "all"], "--windows all is ST2SI's; lancer trains on: random | last"),
    (["--variant", "bare"], "--variant bare has no prompts to tune: give --stage2 full or --stage2 lora (the LM alone)"),
    (["--lora-r", "4"], "--lora-r only applies with --stage2 lora"),
    (["--stage2", "full", "--lora-alpha", "4"], "--lora-alpha only applies with --stage2 lora"),
    (["--stage2-epochs", "2"], "--stage2-epochs needs --stage2 full or --stage2 lora"),
])
def test_lancer_flag_combinations_are_refused_before_loading(extra, message, capsys, tmp_path):
    assert main(["train", "--method", "lancer", "--output-dir", str(tmp_path / "x"), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "x").exists()


def test_lancer_flags_reach_the_recipe_and_stay_off_other_methods(capsys, tmp_path):
    from genrec_hf.cli import _training_config, build_parser

    args = build_parser().parse_args(LANCER_TRAIN + [
        "--knowledge-epochs", "0", "--stage1-epochs", "2.5", "--stage2", "lora", "--stage2-epochs", "4", "--lora-r", "4",
        "--lora-alpha", "8", "--variant", "title", "--decode", "trie", "--eval-users", "50", "--beam-size", "20",
        "--learning-rate", "1e-3", "--windows", "last", "--max-item-tokens", "16", "--lm-layers", "3"])
    args.backbone = "tiny"
    cfg = _training_config(args)
    assert (cfg.knowledge_epochs, cfg.stage1_epochs, cfg.stage2, cfg.stage2_epochs, cfg.lora_r, cfg.lora_alpha) == (
        0.0, 2.5, "lora", 4.0, 4, 8)
    assert (cfg.variant, cfg.decode, cfg.eval_users, cfg.beam_size, cfg.learning_rate, cfg.windows, cfg.max_item_tokens) == (
        "title", "trie", 50, 20, 1e-3, "last", 16)
    assert cfg.lm_layers == 3
    defaults = build_parser().parse_args(LANCER_TRAIN)
    defaults.backbone = "tiny"
    cfg = _training_config(defaults)
    assert (cfg.max_items, cfg.beam_size, cfg.learning_rate, cfg.decode, cfg.stage2) == (10, 10, 2e-4, "cosine", "none")
    genrec = build_parser().parse_args(["train", "--method", "genrec", "--output-dir", "unused"])
    genrec.backbone = "tiny"
    assert _training_config(genrec).beam_size == 20
    assert main(["train", "--method", "genrec", "--output-dir", str(tmp_path / "g"), "--decode", "trie", "--eval-users", "3"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --decode applies only to --method lancer; "
                                               "--eval-users applies only to --method lancer or recsys_glm")


RECSYS_GLM_TINY = ["--limit-users", "10", "--max-steps", "2", "--eval-users", "4", "--beam-size", "4", "--pretrain-epochs", "1",
                   "--max-items", "5", "--no-progress"]


def test_train_evaluate_recommend_recsys_glm_tiny(tmp_path, capsys):
    out_dir = tmp_path / "recsys_glm"
    assert main(["train", "--method", "recsys_glm", "--output-dir", str(out_dir), *RECSYS_GLM_TINY]) == 0
    text = capsys.readouterr().out
    assert "split=test users=10 top-4 lists from generation" in text  # the test lists are as long as validation's
    config = json.loads((out_dir / "config.json").read_text())
    assert config["model_type"] == "recsys_glm" and config["text_config"]["model_type"] == "recsys_glm_text"
    assert config["beam_size"] == 4 and config["dynamic_positions"] is True and config["lora"] is None
    info = json.loads((out_dir / "training_info.json").read_text())
    assert info["method"] == "recsys_glm" and info["validation"]["users"] == 4 and info["test"]["users"] == 10
    assert info["training"]["backbone"] == "glm-tiny" and info["training"]["lora_r"] == 0  # random init: full fine-tuning
    assert info["tuning"] == {"pretrained_backbone": False, "mode": "full fine-tuning", "lora_merged": False,
                              "new_token_rows_trained": 0}
    for name in ("modeling_recsys_glm.py", "trie.py", "processing_recsys_glm.py", "item_catalog.json", "README.md"):
        assert (out_dir / name).is_file(), name
    assert not list(out_dir.glob("trainer_checkpoints*"))

    assert main(["evaluate", str(out_dir), "--limit-users", "3", "--num-beams", "5", "--top-k", "5", "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_users"] == 3 and result["settings"]["top_k"] == 5 and result["valid_ratio"] == 1.0
    assert result["settings"]["generation"] == {"num_beams": 5}
    assert main(["evaluate", str(out_dir), "--limit-users", "2", "--unconstrained", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["generation"] == {"constrained": False}
    assert main(["recommend", str(out_dir), "--user", "7", "--top-k", "3"]) == 0
    titles = re.findall(r"^ *\d+\. +\S+  (.*)  \(-?[\d.]+\)$", capsys.readouterr().out, flags=re.M)
    assert len(titles) == 3 and all(titles)
    assert main(["evaluate", str(out_dir), "--decode", "trie", "--no-progress"]) == 2
    assert "--decode applies only to LANCER checkpoints" in capsys.readouterr().err
    assert main(["upload", str(out_dir), "--repo-id", "me/recsys-glm", "--dry-run"]) == 0
    assert "nothing pushed" in capsys.readouterr().out


def test_recsys_glm_flags_reach_the_recipe_and_stay_off_other_methods(capsys, tmp_path):
    from genrec_hf.cli import _training_config, build_parser

    train = ["train", "--method", "recsys_glm", "--output-dir", "unused"]
    args = build_parser().parse_args(train + [
        "--lora-rank", "4", "--keep-lora", "--no-dynamic-positions", "--pretrain-epochs", "2", "--epochs", "3",
        "--eval-users", "50", "--lm-layers", "2", "--beam-size", "25", "--finetune-targets", "last", "--max-items", "7",
        "--max-item-tokens", "16", "--learning-rate", "1e-3", "--tasks", "rating=2,sequential,direct=0.5",
        "--user-features", "age, gender"])
    args.backbone = "smollm2-135m"
    cfg = _training_config(args)
    assert (cfg.backbone, cfg.lora_r, cfg.merge_lora, cfg.dynamic_positions, cfg.pretrain_epochs, cfg.epochs) == (
        "smollm2-135m", 4, False, False, 2.0, 3.0)
    assert (cfg.eval_users, cfg.lm_layers, cfg.beam_size, cfg.finetune_targets, cfg.max_items, cfg.max_item_tokens,
            cfg.learning_rate) == (50, 2, 25, "last", 7, 16, 1e-3)
    assert cfg.tasks == {"rating": 2.0, "sequential": 1.0, "direct": 0.5} and cfg.user_features == ["age", "gender"]
    for bad, message in (("ranking=1", "unknown task family 'ranking'"), ("rating=x", "must be a number"),
                         ("rating=-1", "weights must be >= 0")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(train + ["--tasks", bad])
        assert message in capsys.readouterr().err
    defaults = build_parser().parse_args(train)
    defaults.backbone = "glm-tiny"
    cfg = _training_config(defaults)
    assert (cfg.lora_r, cfg.merge_lora, cfg.dynamic_positions, cfg.pretrain_epochs, cfg.beam_size, cfg.max_items) == (
        None, True, True, 8.0, 20, 20)
    assert (cfg.resolved_lora_r(pretrained=False), cfg.resolved_lora_r(pretrained=True)) == (0, 8)  # the paper's rank when pretrained
    genrec = build_parser().parse_args(["train", "--method", "genrec", "--output-dir", "unused"])
    genrec.backbone = "tiny"
    assert _training_config(genrec).finetune_targets == "last"  # genrec's own default is kept
    for method, extra, message in (
        ("genrec", ["--lora-rank", "4", "--no-dynamic-positions"], "--lora-rank, --no-dynamic-positions apply only to --method recsys_glm"),
        ("st2si", ["--keep-lora"], "--keep-lora applies only to --method recsys_glm"),
        ("st2si", ["--tasks", "rating"], "--tasks applies only to --method recsys_glm"),
        ("lancer", ["--lora-rank", "4"], "--lora-rank applies only to --method recsys_glm (lancer's LoRA rank is --lora-r)"),
        ("recsys_glm", ["--lora-r", "4"], "--lora-r applies only to --method lancer (recsys_glm's LoRA rank is --lora-rank)"),
        ("recsys_glm", ["--decode", "trie", "--stage2", "lora"], "--stage2, --decode apply only to --method lancer"),
        ("recsys_glm", ["--windows", "last"], "--windows is ST2SI's, LANCER's and the ID models'; recsys_glm picks its fine-tuning "
                                              "targets with --finetune-targets random|last"),
        ("recsys_glm", ["--lora-rank", "0", "--keep-lora"], "--keep-lora needs LoRA adapters: not with --lora-rank 0 "
                                                            "(full fine-tuning)"),
    ):
        assert main(["train", "--method", method, "--output-dir", str(tmp_path / "x"), *extra]) == 2
        assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "x").exists()
