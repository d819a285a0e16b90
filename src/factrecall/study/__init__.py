"""The study wing: bases, the runner (its steps iterate `analysis/registry.py`), the Stage arms, sweeps, the
summary and the claims (docs/method.md §0, §11, §12). Its config is `config/`, its plans `plan/`."""
