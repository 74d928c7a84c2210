"""Training: thin Lightning modules for pretraining, linear probing and fine-tuning (`modules`), the optimiser
recipes (`optim`), callbacks that show progress and keep checkpoints whole (`callbacks`), the quiet Trainer and
the one precision rule (`trainer`), and the `maelib` command line (`cli`). Devices, nodes and strategies are
Lightning's job."""

from .modules import FineTuneModule, LinearProbeModule, MAEPretrainModule
from .trainer import precision, quiet_lightning, quiet_trainer
