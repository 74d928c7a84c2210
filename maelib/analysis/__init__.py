"""Analysis and pictures: what a trained MAE fills in and how wrong it is (`reconstruction`), the honest
baselines beside it (`baselines`), attention weights and maps (`attention`), features as pictures
(`embedding`), figures (`viz`) and the click-to-mask widget (`mask_widget`, imported on its own: it needs
anywidget).

The numbers are pure functions returning tensors or arrays; `viz` turns them into matplotlib figures.

    import maelib.analysis as A
    out = A.reconstruct(model, imgs, mask_ratio=0.75)     # masked, reconstruction, pasted, mask, loss
    errors = A.reconstruction_baselines(model, imgs)      # the model beside predict-zero, interpolation, ...
"""

from .attention import (
    attention_distances,
    attention_maps,
    attention_rollout,
    attention_weights,
    capture_attention,
    cls_attention_map,
    mean_attention_distance,
    patch_distances,
    query_attention_map,
)
from .baselines import interpolate_hidden, mean_colour_baseline_mse, reconstruction_baselines
from .embedding import embed_2d, pca_rgb
from .reconstruction import (
    error_vs_mask_ratio,
    evaluating,
    mask_to_image,
    model_device,
    patch_errors,
    reconstruct,
    seeded_noise,
    target_patches,
)
