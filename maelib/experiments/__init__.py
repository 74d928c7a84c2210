"""Experiments: sweeps of seeded runs on this machine or SLURM (`sweep`), their statistics (`stats`), and the
paper's ablations (`ablation`, one run; `ablation_design`, the factors, presets and claims)."""
