"""Course tooling: each notebook's parameters declared once (`parameters`), what the notebooks share: one-line
start, self-checking exercises, recorded results (`notebook`), the exercises' solutions (`exercises`), running
the suite headless (`suite`), the YAML presets and notebooks inside a wheel (`presets`), and a one-minute demo
(`demo`)."""
