"""Weights: reading and writing them without unpickling code (`checkpoint`), conversions to and from Hugging Face
and timm (`convert`), downloads checked against published checksums (`download`), and the model zoo that turns a
name into a file and a model (`zoo`). The shipped zoo files (`*.safetensors` and their `*.json` cards) sit in
this folder too.

Layers: `checkpoint` reads and writes files and knows nothing of names; `zoo` resolves a name to a file
(`weights_file`) and loads it (`load_model`, `load_pretrained`)."""

from .checkpoint import checkpoint_config, load_model_file, save_classifier
from .download import download_checkpoint
from .zoo import is_pretrained_name, weights_file

# The names of `import maelib` (load_model, save_model, load_pretrained, ...) are maelib's own; this package adds
# the lower-level ones.
