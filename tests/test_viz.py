"""Every figure function returns a Figure with the expected axes and saves to PNG."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from maelib import analysis as A  # noqa: E402
from maelib import create_model  # noqa: E402
from maelib.analysis import viz  # noqa: E402

GREY = create_model("mae_vit_mini_patch4_28", depth=2)  # 4 heads
COLOUR = create_model("mae_vit_tiny_patch4_32", depth=1, embed_dim=48)  # 3 heads
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
G = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
C = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
CURVES = {"MAE": np.random.rand(2, 4) * 10, "random init": np.random.rand(2, 4) * 10}

CASES = {  # name: (figure factory, number of axes)
    "reconstruction": (lambda: viz.show_reconstruction(GREY, G, mask_ratio=0.75), 3 * 4),
    "reconstruction_colour": (lambda: viz.show_reconstruction(COLOUR, C, mean=MEAN, std=STD, max_images=1), 4),
    "mask_ratios": (lambda: viz.show_mask_ratios(GREY, G[0], ratios=(0.5, 0.75, 0.9)), 1 + 2 * 3),
    "attention": (lambda: viz.show_attention(GREY, G[0]), 1 + 4 + 1),  # image, heads, colorbar
    "attention_masked": (lambda: viz.show_attention(COLOUR, C[0], block=0, mask_ratio=0.5, mean=MEAN, std=STD), 5),
    "query_attention": (lambda: viz.show_query_attention(GREY, G[0], query=(2, 3), block=0), 1 + 4 + 1),
    "rollout": (lambda: viz.show_rollout(GREY, G, discard_ratio=0.2), 2 * 3 + 1),
    "patch_errors": (lambda: viz.show_patch_errors(GREY, G[:2], space="pixel"), 2 * 4 + 1),
    "pca": (lambda: viz.show_pca(COLOUR, C, mean=MEAN, std=STD), 2 * 2),
    "attention_distance": (lambda: viz.plot_attention_distance(CURVES), 1),
    "embedding": (lambda: viz.plot_embedding(torch.randn(12, 6), torch.arange(12) % 3, ["a", "b", "c"]), 1),
    "error_vs_mask_ratio": (lambda: viz.plot_error_vs_mask_ratio([0.5, 0.75], {"MAE": [0.2, 0.3], "mean colour": [0.4, 0.5]}), 1),
    "loss_curve": (lambda: viz.plot_loss_curve(range(50), np.linspace(1, 0.1, 50), smooth=5), 1),
}


@pytest.mark.parametrize("name", CASES)
def test_figure_has_expected_axes_and_saves_png(name, tmp_path):
    make, num_axes = CASES[name]
    fig = make()
    try:
        assert isinstance(fig, Figure)
        assert len(fig.axes) == num_axes
        path = viz.save_figure(fig, tmp_path / "nested" / name)  # no suffix -> .png, parent created
        assert path.suffix == ".png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        plt.close(fig)


def test_figures_do_not_touch_pyplot_or_training_mode():
    GREY.train()
    fig = viz.show_reconstruction(GREY, G[:1])
    assert GREY.training and plt.get_fignums() == []
    plt.close(fig)


def test_to_display_unnormalises_and_clamps():
    x = torch.tensor([-3.0, 0.0, 3.0]).reshape(1, 3, 1, 1).expand(2, 3, 2, 2)
    shown = viz.to_display(x, mean=MEAN, std=STD)
    assert shown.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(shown[0, 0, 0], [0.0, 0.4, 0.9], atol=1e-6)
    assert viz.to_display(x[0]).min() == 0 and viz.to_display(x[0]).max() == 1


def test_masked_attention_leaves_hidden_patches_blank():
    attn, ids_keep = A.attention_maps(GREY, G[:1], blocks=[0], mask_ratio=0.75)
    maps = A.cls_attention_map(attn[0], ids_keep, grid=7)
    assert int(torch.isnan(maps[0, 0]).sum()) == 49 - ids_keep.shape[1]


def test_embedding_names_its_axes_and_keeps_the_legend_off_the_points():
    for method, axis in (("pca", "PC"), ("tsne", "t-SNE")):
        fig = viz.plot_embedding(torch.randn(12, 6), torch.arange(12) % 3, ["a", "b", "c"], method)
        ax = fig.axes[0]
        assert (ax.get_xlabel(), ax.get_ylabel()) == (f"{axis} 1", f"{axis} 2")
        fig.canvas.draw()
        legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.x0 >= box.x1, "the legend overlaps the axes"
        plt.close(fig)


def test_error_vs_mask_ratio_goes_log_when_the_curves_are_far_apart():
    far = viz.plot_error_vs_mask_ratio([0.5, 0.75], {"MAE": [0.1, 0.2], "random init": [3.0, 2.9]})
    near = viz.plot_error_vs_mask_ratio([0.5, 0.75], {"MAE": [0.2, 0.3], "mean colour": [0.4, 0.5]})
    assert far.axes[0].get_yscale() == "log" and near.axes[0].get_yscale() == "linear"
    assert viz.plot_error_vs_mask_ratio([0.5], {"a": [0.1], "b": [3.0]}, logy=False).axes[0].get_yscale() == "linear"
