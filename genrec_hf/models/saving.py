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


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# written first into a checkpoint folder being saved and removed just before it is renamed into place:
# a folder that still has it was left by a process that stopped while saving
INCOMPLETE_MARKER = ".genrec_hf-incomplete"


def refuse_incomplete(folder) -> None:
    if os.path.isfile(os.path.join(str(folder), INCOMPLETE_MARKER)):
        raise OSError(
            f"{folder} is an unfinished save (the process writing it stopped before it was complete): "
            "load the folder it was being saved as, or save again"
        )


class SafetensorsOnlyLoading:
    """`from_pretrained` that loads safetensors weights only: a pickle `pytorch_model.bin` can run code
    when it is unpickled, so a folder or repo that holds only one is refused with a message that says
    what to do, unless the caller opts in with `allow_pickle=True` (then transformers' own rules apply).
    Mixed into each model's PreTrainedModel base, before it."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, allow_pickle: bool = False, **kwargs):
        refuse_incomplete(pretrained_model_name_or_path)
        if allow_pickle or kwargs.get("use_safetensors") is not None:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        kwargs["use_safetensors"] = True
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as err:
            folder = str(pretrained_model_name_or_path)
            pickles = [n for n in PICKLE_WEIGHTS if os.path.isfile(os.path.join(folder, kwargs.get("subfolder") or "", n))]
            if not pickles:
                raise
            raise OSError(
                f"{folder} holds pickle weights only ({', '.join(pickles)}), and genrec_hf loads safetensors only: "
                "unpickling can run code. Convert them (load once with allow_pickle=True from a source you trust, "
                "then save_pretrained writes model.safetensors), or pass allow_pickle=True"
            ) from err
