"""`import genrec_hf` is light (PEP 562): public names load on first access, the data layer
imports without torch/transformers, and naming a model class registers the Auto classes.

Each check runs in a fresh interpreter (this process has long imported everything) and
prints its findings as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "transformers", "datasets", "peft", "genrec_hf.models", "genrec_hf.training")


def _run(code: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    script = "import json, sys\n" + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bare_import_loads_nothing_heavy_and_lists_its_names():
    out = _run(f"""
        import genrec_hf
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        try:
            genrec_hf.no_such_name
            error = None
        except AttributeError as exc:
            error = str(exc)
        names = dir(genrec_hf)
        print(json.dumps({{"loaded": loaded, "version": genrec_hf.__version__, "error": error, "dir": names,
                          "all": genrec_hf.__all__,
                          "loaded_after": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    assert out["loaded"] == [], f"import genrec_hf loaded {out['loaded']}"
    assert out["version"] and isinstance(out["version"], str)
    assert out["error"] and "no_such_name" in out["error"]
    assert set(out["all"]) <= set(out["dir"]), set(out["all"]) - set(out["dir"])
    assert out["loaded_after"] == [], "dir() or a failed lookup imported something heavy"


def test_data_layer_imports_without_torch_transformers_or_the_models():
    out = _run("""
        import genrec_hf.data
        from genrec_hf import ItemCatalog, load_sequences
        print(json.dumps([m for m in ("torch", "transformers", "genrec_hf.models", "peft") if m in sys.modules]))
    """)
    assert out == [], f"import genrec_hf.data loaded {out}"


def test_accessing_a_model_name_registers_and_every_public_name_resolves():
    out = _run("""
        import transformers
        import genrec_hf
        def known(model_type):
            try:
                transformers.AutoConfig.for_model(model_type)
                return True
            except ValueError:
                return False
        before = known("st2si")
        from genrec_hf import ST2SIConfig
        after = known("st2si") and type(transformers.AutoConfig.for_model("st2si")) is ST2SIConfig
        unresolved = [name for name in genrec_hf.__all__ if getattr(genrec_hf, name, None) is None]
        import genrec_hf.models as models
        mismatched = [name for name in genrec_hf.__all__
                      if hasattr(models, name) and getattr(genrec_hf, name) is not getattr(models, name)]
        print(json.dumps({"before": before, "after": after, "unresolved": unresolved, "mismatched": mismatched}))
    """)
    assert out["before"] is False, "a bare `import genrec_hf` should not register (it would load the models)"
    assert out["after"] is True, "`from genrec_hf import ST2SIConfig` did not register st2si with AutoConfig"
    assert out["unresolved"] == [] and out["mismatched"] == [], out


def test_register_auto_classes_makes_auto_model_know_every_method():
    out = _run("""
        import genrec_hf
        assert genrec_hf.register_auto_classes() is None
        genrec_hf.register_auto_classes()  # idempotent
        import transformers
        from genrec_hf.models import METHOD_MODELS
        print(json.dumps({name: transformers.AutoModel._model_mapping.get(model.config_class, None) is model
                          for name, model in METHOD_MODELS.items()}))
    """)
    assert out and all(out.values()), out

