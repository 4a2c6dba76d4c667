"""Shared check for the parameters genrec_hf creates on top of a backbone.

transformers 5 silently skips an `_init_weights` branch that matches a container without
parameters of its own (design.md §7), so every model test states, for every parameter the
package adds, the distribution it must start from. A parameter with no stated expectation
fails the check: a new prompt, MLP or table cannot slip in untested.
"""

from __future__ import annotations

import fnmatch

import torch


def assert_created_parameters_initialised(model, expected: dict[str, tuple[float, float]], backbone_prefixes: tuple[str, ...]):
    """Check every parameter of `model` outside `backbone_prefixes`.

    expected: glob pattern on the parameter name -> (mean, std). std 0 means "exactly `mean`"
        (biases 0, LayerNorm weights 1); otherwise the sample std must be within 15% of it and
        the mean within 3 standard errors (plus a little slack) of the stated mean.
    """
    checked = []
    for name, param in model.named_parameters():
        if name.startswith(backbone_prefixes):
            continue
        patterns = [p for p in expected if fnmatch.fnmatchcase(name, p)]
        assert patterns, f"{name} {tuple(param.shape)} is created by genrec_hf but has no init expectation"
        mean, std = expected[patterns[0]]
        values = param.detach().float().flatten()
        if std == 0:
            assert torch.all(values == mean), f"{name} should start at exactly {mean}"
        else:
            assert values.numel() >= 100, f"{name}: too few values ({values.numel()}) to check an init std"
            got = values.std().item()
            assert abs(got - std) <= 0.15 * std, f"{name} starts with std {got:.4f}, expected {std}"
            tolerance = 3 * std / values.numel() ** 0.5 + 1e-3 * std
            assert abs(values.mean().item() - mean) <= tolerance, f"{name} starts with mean {values.mean().item():.4f}"
        checked.append(name)
    assert checked, "no created parameter was found: wrong backbone prefixes?"
    return checked
