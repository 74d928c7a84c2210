"""Every notebook's parameters, declared once: their type and allowed range.

A notebook's `parameters` cell (the one papermill rewrites) stays plain assignments; what each value may be lives
here, so that the notebook checks it in one line and `python -m maelib.course.suite` refuses a bad `-p` before
it starts anything:

    out = start_notebook("05_probing_and_knn", globals())      # maelib.course.notebook: check, seed, quiet, folder
    check_parameters("01_patches_and_masking", {"mask_ratio": 1.5, ...})   # ValueError: ... must be in [0.0, 1.0)

A declaration is a `Param`: the type(s), an optional range (a bound can be a function of the other parameters,
e.g. a batch no larger than the training set), choices, None allowed or not, and for a list one `Param` that
every item must satisfy. `NOTEBOOK_PARAMETERS` maps a notebook's file stem to its parameters, in the order of its
`parameters` cell (tests/test_notebooks.py keeps the two the same).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable, Union

__all__ = ["NOTEBOOK_PARAMETERS", "Param", "check_parameter", "check_parameters"]

Bound = Union[float, Callable[[dict], float], None]  # a number, or one computed from the other parameters' values


def _range_text(low: float | None, high: float | None, high_inclusive: bool) -> str:
    if low is not None and high is not None:
        return f"in [{low}, {high}{']' if high_inclusive else ')'}"
    if low is not None:
        return f">= {low}"
    return f"{'<=' if high_inclusive else '<'} {high}"


def check_parameter(name: str, value: Any, kind: type | tuple[type, ...], low: float | None = None,
                    high: float | None = None, *, high_inclusive: bool = True, choices: tuple | None = None,
                    why: str = "") -> None:
    """Fail at once, with a message naming the parameter and what it may be, when a notebook parameter has the
    wrong type or range. `why` is added to a range error (e.g. which other parameter set the bound).

        check_parameter("mask_ratio", mask_ratio, float, 0.0, 1.0, high_inclusive=False)
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
        raise TypeError(f"parameter {name} must be {wanted}, got {value!r} ({type(value).__name__}); "
                        f"e.g. papermill ... -p {name} <value>")
    if choices is not None and value not in choices:
        raise ValueError(f"parameter {name} must be one of {choices}, got {value!r}")
    if (low is not None and value < low) or (high is not None and (value > high or (not high_inclusive and value >= high))):
        raise ValueError(f"parameter {name} must be {_range_text(low, high, high_inclusive)}"
                         f"{f' ({why})' if why else ''}, got {value!r}")


@dataclass(frozen=True)
class Param:
    """What one notebook parameter may be.

    kind: the type, or a tuple of types (an int is accepted for a float). low, high: the range (high excluded
    when not high_inclusive); either may be a function of the dict of all the parameters' values, for bounds
    that depend on another parameter, with `why` saying so in the error. choices: the allowed values, or a
    function returning them (evaluated only when checked, so that declaring costs no imports). optional: None
    is allowed too (the range applies to other values). each: for a list, the Param every item must satisfy;
    min_len: its fewest items. A list or dict given as text (papermill's `-p NAME "[0, 1]"`) is parsed first.
    """

    kind: type | tuple[type, ...]
    low: Bound = None
    high: Bound = None
    high_inclusive: bool = True
    choices: tuple | Callable[[], tuple] | None = None
    optional: bool = False
    each: Param | None = None
    min_len: int | None = None
    why: str = ""

    def kinds(self) -> tuple[type, ...]:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        return kinds + ((type(None),) if self.optional else ())

    def check(self, name: str, value: Any, values: dict) -> Any:
        """Raise TypeError or ValueError naming `name` when `value` breaks the declaration; return the value,
        parsed when it came as text for a list or dict."""
        if isinstance(value, str) and str not in self.kinds() and set(self.kinds()) & {list, tuple, dict}:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass  # the type check below names the parameter
        check_parameter(name, value, self.kinds())
        if value is None:
            return value
        low, high = (bound(values) if callable(bound) else bound for bound in (self.low, self.high))
        choices = self.choices() if callable(self.choices) else self.choices
        check_parameter(name, value, self.kinds(), low, high, high_inclusive=self.high_inclusive,
                        choices=None if choices is None else tuple(choices), why=self.why)
        if self.min_len is not None:
            check_parameter(f"len({name})", len(value), int, self.min_len)
        if self.each is not None:
            for i, item in enumerate(value):
                self.each.check(f"{name}[{i}]", item, values)
        return value


def check_parameters(notebook: str, values: dict) -> dict:
    """Check every parameter declared for `notebook` (a file stem, e.g. "05_probing_and_knn") in `values`,
    in declaration order; raise TypeError/ValueError naming the first bad one and its allowed range. Returns
    {name: value} for the declared parameters, lists and dicts given as text parsed."""
    if notebook not in NOTEBOOK_PARAMETERS:
        raise KeyError(f"no parameters declared for notebook {notebook!r}; known: {sorted(NOTEBOOK_PARAMETERS)}")
    checked = {}
    for name, param in NOTEBOOK_PARAMETERS[notebook].items():
        if name not in values:
            raise NameError(f"parameter {name} of {notebook} is not set: the notebook's parameters cell defines it")
        checked[name] = param.check(name, values[name], {**values, **checked})
    return checked


# ------------------------------------------------------------------ choices, looked up only when checked
def _models() -> tuple:
    from ..registry import list_models

    return tuple(list_models())


def _colour_models() -> tuple:
    from ..registry import list_models, model_config

    return tuple(m for m in list_models() if model_config(m).in_chans == 3)


def _presets() -> tuple:
    from ..experiments.ablation_design import PRESETS

    return tuple(PRESETS)


def _factors() -> tuple:
    from ..experiments.ablation_design import FACTORS

    return tuple(FACTORS)


def _executors() -> tuple:
    from ..experiments.sweep import EXECUTORS

    return tuple(EXECUTORS)


def _targets() -> tuple:
    from ..experiments.ablation import TABLE_1C_TARGETS

    return tuple(TABLE_1C_TARGETS)


def _augmentations() -> tuple:
    from ..experiments.ablation import AUGMENTATIONS

    return tuple(AUGMENTATIONS)


RATIO = Param(float, 0.0, 1.0, high_inclusive=False)  # a fraction of the patches hidden
PATH = Param(str)  # out_dir, checkpoint: "" or a path (or a zoo name)
SEED = Param(int, 0)



def _declare(**params: Param) -> dict[str, Param]:
    """A notebook's parameters, then the two that every notebook ends with: out_dir and seed."""
    return {**params, "out_dir": PATH, "seed": SEED}


NOTEBOOK_PARAMETERS: dict[str, dict[str, Param]] = {
    "01_patches_and_masking": _declare(
        mask_ratio=RATIO,
        image_index=Param(int, 0, 9999),
    ),
    "02_building_the_mae": _declare(
        checkpoint=PATH,
        mask_ratio=RATIO,
        num_images=Param(int, 1, 10000),
    ),
    "03_encoder_decoder": _declare(
        arch=Param(str, choices=_models),
        batch_size=Param(int, 1, 65536),
        repeats=Param(int, 1, 10000),
        threads=Param(int, 0, 1024),
        mask_ratios=Param((list, tuple), min_len=1, each=RATIO),
    ),
    "04_pretraining": _declare(
        arch=Param(str, choices=_models),
        epochs=Param(int, 1),
        train_images=Param(int, 1, 60000, optional=True),
        batch_size=Param(int, 1, lambda p: p["train_images"] or 60000, why="at most train_images"),
        base_lr=Param(float, 0.0, 1.0),
        warmup_epochs=Param(float, 0.0),
        mask_ratio=Param(float, 0.01, 1.0, high_inclusive=False),
        norm_pix_loss=Param(bool),
        compare_steps=Param(int, 0),
        eval_images=Param(int, 8, 10000),
        own_images=PATH,
        own_steps=Param(int, 1),
        own_finetune_steps=Param(int, 1),
    ),
    "05_probing_and_knn": _declare(
        checkpoint=PATH,
        arch=Param(str, choices=_models),
        train_images=Param(int, 10, 60000, optional=True),
        test_images=Param(int, 10, 10000, optional=True),
        probe_epochs=Param(int, 1),
        probe_lr=Param(float, 0.0, 100.0),
        pixel_probe_lr=Param(float, 0.0, 100.0),
        k=Param(int, 1, lambda p: p["train_images"] or 60000, why="at most train_images: the neighbours come from them"),
        temperature=Param(float, 1e-4, 10.0),
        embed_images=Param(int, 10),
        fallback_epochs=Param(int, 1),
    ),
    "06_finetuning": _declare(
        checkpoint=PATH,
        arch=Param(str, choices=_models),
        epochs=Param(int, 1),
        train_images=Param(int, 1, 60000),
        test_images=Param(int, 1, 10000),
        batch_size=Param(int, 1, lambda p: p["train_images"],
                         why="at most train_images: the train loader drops incomplete batches"),
        base_lr=Param(float, 1e-8, 1.0),
        layer_decay=Param(float, 1e-3, 1.0),
        drop_path=Param(float, 0.0, 1.0, high_inclusive=False),
        partial_blocks=Param(list, each=Param(int, 0)),
        partial_epochs=Param(int, 1),
        probe_all_images=Param(int, 10, 60000),
        fallback_epochs=Param(int, 1),
    ),
    "07_visualising": _declare(
        checkpoint=PATH,
        fallback_epochs=Param(int, 1),
        colour_checkpoint=PATH,
        colour_arch=Param(str, choices=_colour_models),
        colour_steps=Param(int, 1),
        images=Param(int, 1, 16),
    ),
    "08_ablations": _declare(
        study=PATH,
        preset=Param(str, choices=_presets),
        factors=Param(list, each=Param(str, choices=_factors)),
        seeds=Param(int, 1, 100),
        steps=Param(int, 0, 10**7),
        batch_size=Param(int, 0, 10**7),
        train_images=Param(int, 0, 10**7),
        eval_train_images=Param(int, 0, 10**7),
        eval_test_images=Param(int, 0, 10**7),
        executor=Param(str, choices=_executors),
        workers=Param(int, 1, 10000),
        runner=Param(str, choices=("function", "notebook")),
        slurm_partition=Param(str),
        slurm_gpus=Param(int, 0, 64),
        slurm_minutes=Param(int, 1, 7 * 24 * 60),
    ),
    "09_pretraining_methods": _declare(
        mae=PATH,
        mocov3=PATH,
        supervised=PATH,
        pretrain_minutes=Param(float, 0.0, 7 * 24 * 60.0),
        bank_images=Param(int, 20, 60000),
        test_images=Param(int, 10, 10000),
        labels=Param(int, 10, 60000),
        fractions=Param(list, min_len=1, each=Param(float, 0.0001, 1.0)),
        label_seeds=Param(int, 1, 100),
        finetune_steps=Param(int, 1, 10**7),
        probe_epochs=Param(int, 1, 10000),
        scenes=Param(int, 2, 100000),
        head_epochs=Param(int, 1, 10000),
        head_lr=Param(float, 0.0, 10.0),
        segment_epochs=Param(int, 0, 10000),
        segment_lr=Param(float, 0.0, 10.0),
    ),
    "ablation_run": _declare(  # notebooks/sweeps/ablation_run.ipynb, notebook 8's child
        mask_ratio=RATIO,
        decoder_depth=Param(int, 1, 24),
        decoder_embed_dim=Param(int, 4, 2048),
        target=Param(str, choices=_targets),
        target_dim=Param(int, 0, 4096),
        masking=Param(str, choices=("random", "block", "grid")),
        encoder_mask_tokens=Param(bool),
        augmentation=Param(str, choices=_augmentations),
        steps=Param(int, 0, 10**7),
        batch_size=Param(int, 2, 8192),
        base_lr=Param(float, 0.0, 1.0),
        warmup_fraction=Param(float, 0.0, 1.0),
        train_images=Param(int, lambda p: p["batch_size"], 60000, why="at least batch_size", optional=True),
        eval_train_images=Param(int, 10, 60000),
        eval_test_images=Param(int, 2, 10000),
        arch=Param(str),
        arch_overrides=Param(dict),
        embed_dim=Param(int, 0, 8192),
        finetune_epochs=Param(int, 0, 10000),
        finetune_images=Param(int, 1, 60000),
        holdout=Param(int, 0, 59999),
        score_at_steps=Param(list, each=Param(int, 1, 10**7)),
        threads=Param(int, 0, 1024),
    ),
}
