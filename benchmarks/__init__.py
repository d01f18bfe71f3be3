"""Benchmarks: `python -m benchmarks` (see benchmarks/run.py)."""


def print_results(results: dict, digits: int = 2) -> None:
    """One aligned `name  value` line per result, floats rounded to `digits`."""
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.{digits}f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
