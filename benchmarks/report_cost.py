"""What building the page's HTML report costs, next to the rest of the page's request.

    python -m benchmarks.report_cost              # the bundled model (or $DETECTOR_MODEL / --model)
    python -m benchmarks.report_cost --repeats 12

The report (pictures at up to 1024 px, the spectrum, all as base64) was built with every result of the Single tab
and sent to the browser with it; it is now built only when its button is pressed. This times, in one run on a
1024x1024 JPEG of a face and on two example photos: the page's request (`app.evidence_for_page`) and `report_html`
alone, and gives the report's size in bytes and `report_share`, report / (request + report): the share of each
analysis's time that building the report with every result would cost. Results: benchmarks/results/report_cost.json.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from benchmarks import print_results
from benchmarks.run import EXAMPLES, ROOT, medians_ms, test_jpeg
from detector import Detector


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or Hub id (default: $DETECTOR_MODEL or the bundled model)")
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args(argv)

    import app
    from detector.evidence_report import examine, report_html

    detector = Detector.from_pretrained(args.model)
    results = {"model": detector.name, "device": str(detector.device), "calls_per_median": 3 * max(1, args.repeats // 3)}
    with tempfile.TemporaryDirectory() as folder:  # outside Gradio's cache: the app reads it and leaves it
        photos = {"1024px_jpeg": Path(folder) / "face.jpg"}
        photos["1024px_jpeg"].write_bytes(test_jpeg())
        photos.update({f"example_{path.stem}": path for path in EXAMPLES[:2]})
        for name, path in photos.items():
            evidence = examine(detector, path.read_bytes(), path.name)
            times = medians_ms({
                "page_request": lambda: app.evidence_for_page(detector, str(path)),
                "report_html": lambda: report_html(evidence, detector),
            }, args.repeats)
            results.update({f"{name}_{key}_ms": value for key, value in times.items()})
            results[f"{name}_report_bytes"] = len(report_html(evidence, detector).encode())
            results[f"{name}_report_share"] = times["report_html"] / (times["page_request"] + times["report_html"])
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report_cost.json").write_text(json.dumps(results, indent=2))
    print_results(results, digits=3)
    return results


if __name__ == "__main__":
    main()
