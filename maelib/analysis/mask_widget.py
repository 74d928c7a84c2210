"""Click-to-mask: an anywidget that hides the patches you click and shows what a trained MAE makes of them.

    from maelib.analysis.mask_widget import MaskPainter
    painter = MaskPainter(maelib.load_pretrained("mae_vit_mini_patch4_28.fmnist_pixel"), image)  # image (C, H, W)
    painter                               # in a notebook: the image with its patch grid, the reconstruction, a readout
    painter.hidden = [3, 10, 17]          # or from Python (papermill, nbval): the same as clicking those patches
    painter.preset("random")              # also "block", "grid" (75% hidden) and "clear"
    painter.loss, painter.predict_zero    # the model's loss on the hidden patches, and predicting zero there

Built on anywidget, which brings its own front-end code to every notebook front end that runs Jupyter widgets
(JupyterLab 4, Notebook 7, Colab, VS Code) with nothing to install or enable. The browser only draws and sends
clicks; the kernel owns the state: `mask` is the synced trait (one 0/1 per patch, row-major, 1 = hidden), and
every change of it, from a click or from Python, runs the model once and updates `reconstruction` (a PNG data
URL), `loss` and `readout`.

The mask goes into the model through `masking.chosen_noise`, so the encoder sees exactly the visible patches.
Pixel-target models are the honest choice here: a norm-pix model's picture borrows each hidden patch's true mean
and std, and the readout then says so.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import anywidget
import numpy as np
import torch
import traitlets
from PIL import Image

from ..masking import MASKING, chosen_noise, random_masking
from .reconstruction import model_device, reconstruct
from .viz import Stats, borrowed_note, to_display

PRESETS = ("random", "block", "grid", "clear")  # the buttons; the first three hide PRESET_RATIO of the patches
PRESET_RATIO = 0.75
DISPLAY_PIXELS = 224  # the drawn size of the image and its reconstruction (nearest-neighbour upscaling)

_ESM = """
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "maelib-mask-painter";
  const row = document.createElement("div");
  row.className = "maelib-mp-row";
  const canvas = document.createElement("canvas");
  canvas.className = "maelib-mp-input";
  canvas.title = "click a patch to hide or show it";
  const recon = document.createElement("img");
  recon.className = "maelib-mp-reconstruction";
  recon.alt = "reconstruction";
  const readout = document.createElement("div");
  readout.className = "maelib-mp-readout";
  const buttons = document.createElement("div");
  buttons.className = "maelib-mp-buttons";
  for (const name of model.get("presets")) {
    const b = document.createElement("button");
    b.textContent = name === "clear" ? "clear" : name + " " + Math.round(100 * model.get("preset_ratio")) + "%";
    b.dataset.preset = name;
    b.addEventListener("click", () => model.send({ preset: name }));
    buttons.appendChild(b);
  }
  const labels = document.createElement("div");
  labels.className = "maelib-mp-labels";
  labels.innerHTML = "<span>input: click to hide / show</span><span>reconstruction + visible patches</span>";
  row.append(canvas, recon);
  root.append(labels, row, buttons, readout);
  el.appendChild(root);

  const picture = new Image();
  function draw() {
    const size = model.get("display_pixels"), g = model.get("grid"), mask = model.get("mask");
    canvas.width = size; canvas.height = size;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    if (picture.complete && picture.naturalWidth) ctx.drawImage(picture, 0, 0, size, size);
    const cell = size / g;
    ctx.fillStyle = "rgba(128, 128, 128, 0.85)";
    mask.forEach((hidden, i) => {
      if (hidden) ctx.fillRect((i % g) * cell, Math.floor(i / g) * cell, cell, cell);
    });
    ctx.strokeStyle = "rgba(255, 255, 255, 0.6)";
    ctx.lineWidth = 1;
    for (let k = 1; k < g; k++) {
      ctx.beginPath(); ctx.moveTo(k * cell, 0); ctx.lineTo(k * cell, size); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, k * cell); ctx.lineTo(size, k * cell); ctx.stroke();
    }
    canvas.dataset.hidden = mask.reduce((n, m) => n + m, 0);
  }
  function update() {
    if (picture.src !== model.get("image")) { picture.onload = draw; picture.src = model.get("image"); }
    recon.src = model.get("reconstruction");
    recon.width = recon.height = model.get("display_pixels");
    readout.textContent = model.get("readout");
    draw();
  }
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect(), g = model.get("grid");
    const col = Math.min(g - 1, Math.floor((event.clientX - box.left) / box.width * g));
    const r = Math.min(g - 1, Math.floor((event.clientY - box.top) / box.height * g));
    const mask = model.get("mask").slice();
    mask[r * g + col] = mask[r * g + col] ? 0 : 1;
    model.set("mask", mask);
    model.save_changes();
    draw();
  });
  for (const name of ["image", "reconstruction", "readout", "mask", "grid", "display_pixels"]) {
    model.on("change:" + name, update);
  }
  update();
}
export default { render };
"""

_CSS = """
.maelib-mask-painter { font-family: sans-serif; font-size: 13px; }
.maelib-mp-row { display: flex; gap: 12px; }
.maelib-mp-labels { display: flex; gap: 12px; color: #555; }
.maelib-mp-labels span { width: 224px; }
.maelib-mp-input { cursor: pointer; image-rendering: pixelated; border: 1px solid #999; }
.maelib-mp-reconstruction { image-rendering: pixelated; border: 1px solid #999; }
.maelib-mp-buttons { margin: 6px 0; display: flex; gap: 6px; }
.maelib-mp-readout { font-family: monospace; white-space: pre-wrap; }
"""


def png_data_url(img: np.ndarray, size: int) -> str:
    """(H, W, C) floats in [0, 1] -> a PNG data URL of the image upscaled to size x size (nearest neighbour)."""
    pixels = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    picture = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class MaskPainter(anywidget.AnyWidget):
    """Click patches to hide them; see the MAE's reconstruction and its loss on the hidden patches.

    model: a MaskedAutoencoder (a pixel-target one shows only what it predicted); image: (C, H, W) or (1, C, H, W)
    in the model's input space (normalised); mean/std: the normalisation, to draw the pictures in true colours;
    hidden: the patches hidden at the start (indices, row-major), default a seeded random 75%.
    """

    _esm = _ESM
    _css = _CSS
    mask = traitlets.List(traitlets.Int(), help="one 0/1 per patch, row-major; 1 = hidden").tag(sync=True)
    grid = traitlets.Int(help="patches per side").tag(sync=True)
    image = traitlets.Unicode(help="the input as a PNG data URL").tag(sync=True)
    reconstruction = traitlets.Unicode(help="the reconstruction with the visible patches pasted, PNG").tag(sync=True)
    readout = traitlets.Unicode().tag(sync=True)
    loss = traitlets.Float(math.nan, help="the model's loss on the hidden patches (its own target space)")
    predict_zero = traitlets.Float(math.nan, help="the loss of predicting zero on the same hidden patches")
    presets = traitlets.List(traitlets.Unicode(), list(PRESETS)).tag(sync=True)
    preset_ratio = traitlets.Float(PRESET_RATIO).tag(sync=True)
    display_pixels = traitlets.Int(DISPLAY_PIXELS).tag(sync=True)

    def __init__(self, model: torch.nn.Module, image: torch.Tensor, *, mean: Stats = None, std: Stats = None,
                 hidden: Sequence[int] | None = None, seed: int = 0, **kwargs) -> None:
        self._model, self._mean, self._std, self._seed, self._draws = model, mean, std, seed, 0
        super().__init__(grid=model.config.grid_size, **kwargs)
        self.observe(self._run, names="mask")
        self.on_msg(self._on_message)
        self.show(image=image, hidden=hidden)

    # ------------------------------------------------------------------------------------------ from Python
    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def hidden(self) -> list[int]:
        """The hidden patches' indices (row-major)."""
        return [i for i, m in enumerate(self.mask) if m]

    @hidden.setter
    def hidden(self, indices: Sequence[int]) -> None:
        bad = [i for i in indices if not 0 <= int(i) < self.num_patches]
        if bad:
            raise ValueError(f"patch indices must lie in 0..{self.num_patches - 1} (a {self.grid} x {self.grid} "
                             f"grid, row-major), got {bad}")
        chosen = {int(i) for i in indices}
        self.mask = [int(i in chosen) for i in range(self.num_patches)]

    def show(self, *, model: torch.nn.Module | None = None, image: torch.Tensor | None = None,
             hidden: Sequence[int] | None = None) -> None:
        """Change the model and/or the image (the mask stays unless `hidden` is given) and redraw."""
        if model is not None:
            if model.config.grid_size != self.grid:
                raise ValueError(f"the new model has a {model.config.grid_size} x {model.config.grid_size} patch "
                                 f"grid, this painter {self.grid} x {self.grid}: make a new MaskPainter for it")
            self._model = model
        if image is not None:
            img = torch.as_tensor(image).detach().float().cpu()
            self._image = self._model.check_images(img[None] if img.ndim == 3 else img)[:1]
            self.image = png_data_url(to_display(self._image, self._mean, self._std)[0], self.display_pixels)
        before = list(self.mask)
        if hidden is not None:
            self.hidden = hidden
        elif len(self.mask) != self.num_patches:
            self.preset("random")
        if self.mask == before:  # a changed mask has already redrawn (the observer); a new model or image has not
            self._run()

    def preset(self, name: str) -> None:
        """Hide patches as a preset does: "random", "block" or "grid" (PRESET_RATIO of them, a new seeded draw
        each time) or "clear" (show everything)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        if name == "clear":
            self.mask = [0] * self.num_patches
            return
        generator = torch.Generator().manual_seed(self._seed + self._draws)
        self._draws += 1
        noise = MASKING[name](1, self.grid, PRESET_RATIO, generator=generator)
        _, mask, _ = random_masking(torch.zeros(1, self.num_patches, 1), PRESET_RATIO, noise)
        self.mask = mask[0].int().tolist()

    def _repr_mimebundle_(self, **kwargs):
        """The widget view, and for pages without a kernel (GitHub, nbconvert, the course site) a text/plain that
        says what the widget is and what it shows now, instead of `<MaskPainter object at 0x...>`."""
        bundle = super()._repr_mimebundle_(**kwargs)  # anywidget: (data, metadata); ipywidgets: data
        if bundle is None:
            return None
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data["text/plain"] = ("MaskPainter: an interactive widget (click patches to hide them); it needs a running "
                              "kernel.\n" + self.readout)
        return bundle

    # ------------------------------------------------------------------------------------------ the model
    def _on_message(self, widget, content, buffers) -> None:
        if isinstance(content, dict) and content.get("preset") in PRESETS:
            self.preset(content["preset"])

    def _run(self, change=None) -> None:
        hidden = torch.tensor(self.mask, dtype=torch.bool)
        count = int(hidden.sum())
        if count == self.num_patches:
            self.loss = self.predict_zero = math.nan
            self.reconstruction = self.image
            self.readout = f"all {count} patches hidden: leave at least one visible for the encoder"
            return
        ratio, noise = chosen_noise(hidden)
        out = reconstruct(self._model, self._image, ratio, noise.to(model_device(self._model)))
        self.reconstruction = png_data_url(to_display(out["pasted"], self._mean, self._std)[0], self.display_pixels)
        if count == 0:
            self.loss = self.predict_zero = math.nan
            self.readout = f"0 of {self.num_patches} patches hidden: hide some to see the model predict them"
            return
        trivial = self._model.trivial_patch_loss(self._image.to(out["pred"].device))  # (1, L)
        self.loss = float(out["loss"])  # the model's own loss on the hidden patches, in its target space
        self.predict_zero = float(trivial[0, out["mask"][0].bool()].mean())
        self.readout = (f"{count} of {self.num_patches} patches hidden ({count / self.num_patches:.0%})\n"
                        f"loss on the hidden patches {self.loss:.4f}   (predicting zero there: {self.predict_zero:.4f})"
                        + borrowed_note(self._model))
