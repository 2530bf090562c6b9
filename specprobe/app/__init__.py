"""The app layer: CLI, experiment runner and demo; the only place that knows the whole pipeline."""
