"""The policy factory: a ready DeerPolicy from a model folder, our single file or a DeeR .pth."""
from __future__ import annotations

from pathlib import Path

from deer_ros.model.checkpoint import config_from_reference, is_own_format, load_own, load_reference, read_file
from deer_ros.model.config import DeerConfig


def resolve_checkpoint(checkpoint: str | Path | None, preset: str | None = "tiny") -> Path:
    """The checkpoint to load: the given path, or (None / '') the bundled demo model folder."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist: give a model folder made by "
                                    "`deer-ros convert` (or a deer_ros .pt / DeeR .pth file)")
        return path
    from deer_ros.paths import demo_checkpoint

    if preset not in (None, "tiny"):
        raise ValueError(f"model '{preset}' needs a checkpoint: set 'checkpoint' to a model folder made by "
                         "`deer-ros convert` (the bundled demo model is a tiny model)")
    path = demo_checkpoint()
    if not path.exists():
        raise FileNotFoundError(f"the bundled demo model {path} is missing: rebuild it with "
                                "scripts/make_demo_model.sh (see README) or pass a checkpoint")
    return path


def load_policy(checkpoint: str | Path | None = None, preset: str | None = "tiny", device: str = "cpu",
                dtype: str = "fp32", max_exit: int | None = None, memory_budget_mb: float | None = None, *,
                tokenizer: str | Path | None = None, vision_weights: str | Path | None = None,
                mpt_weights: str | Path | None = None, exit_interval: int | None = None):
    """A ready DeerPolicy, building only the layers that may run.

    checkpoint: a model folder (`deer-ros convert`), our single-file .pt, or a DeeR .pth (then with
        `vision_weights` / `mpt_weights` where the file lacks them); None = the bundled demo model folder.
    `preset` must match the checkpoint's model (None: any). `max_exit` and `memory_budget_mb` (LLM weights, in
    `dtype`) both cap the exits built; the stricter wins. `tokenizer` overrides the checkpoint's tokenizer.
    """
    from deer_ros.model.memory import check_dtype, max_exit_for_budget
    from deer_ros.model.policy import DeerPolicy
    from deer_ros.model.tokenizer import load_tokenizer

    check_dtype(dtype)
    path = resolve_checkpoint(checkpoint, preset)
    data = read_file(path)  # a model folder reads as our own format
    if is_own_format(data):
        config = DeerConfig.from_dict(data["config"])
    else:  # a DeeR .pth: vision/perceiver sizes from the preset, the rest from the file
        config = config_from_reference(data, DeerConfig.preset(preset) if preset else None, str(path),
                                       **({"exit_interval": exit_interval} if exit_interval else {}))
    if preset is not None and config.name != preset:
        raise ValueError(f"{path} holds a '{config.name}' model but model preset '{preset}' was requested: "
                         f"set the model parameter to '{config.name}'")
    caps = [k for k in (max_exit, max_exit_for_budget(config, memory_budget_mb, dtype) if memory_budget_mb else None)
            if k is not None]
    cap = min(caps) if caps else None
    if is_own_format(data):
        model = load_own(data, cap, str(path))
    else:
        model = load_reference(data, config=config, vision_weights=vision_weights, mpt_weights=mpt_weights,
                               max_exit=cap)
    return DeerPolicy(model, load_tokenizer(tokenizer or config.tokenizer), device=device, dtype=dtype)
