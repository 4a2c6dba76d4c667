"""What every model folder records and writes when it is saved, beyond transformers' own saving.

Self-contained (standard library only): each model folder holds a symlink to this file, so a saved
checkpoint carries a copy next to the modeling file that imports it (Hub remote code).
"""

from __future__ import annotations

import os


def public_name(name_or_path) -> str:
    """The backbone name a checkpoint may publish: a Hub id or a spec as it is, a local folder by its
    own name only (config.json must not record the machine's paths)."""
    text = str(name_or_path or "")
    if os.path.isabs(text) or text.startswith(("./", "../", "~")) or os.path.exists(text):
        return os.path.basename(os.path.normpath(os.path.expanduser(text)))
    return text


def give_weights_the_umask_mode(save_directory) -> None:
    """safetensors >= 0.8 writes each weight file through an owner-only temporary file (mode 0600,
    safetensors#782): give the saved weights the mode any new file gets (0644 under umask 022)."""
    if not os.path.isdir(save_directory):
        return
    umask = os.umask(0o022)
    os.umask(umask)  # the umask can only be read by setting it
    for name in os.listdir(save_directory):
        if name.endswith(".safetensors"):
            os.chmod(os.path.join(save_directory, name), 0o666 & ~umask)
