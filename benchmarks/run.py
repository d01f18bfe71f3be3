"""Speed and memory of the detector, as ratios measured in one run on this machine.

    python -m benchmarks                 # the bundled model (or $DETECTOR_MODEL), prints a table
    python -m benchmarks --quick         # fewer repeats and requests, for a smoke check
    python -m benchmarks --baseline OLD  # also time OLD's analyze paths in the same run (before/after)

Each line is a median over repeated calls after warm-up. Results also go to
benchmarks/results/latest.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch
from PIL import Image

from benchmarks import print_results
from detector import Analysis, Detector, FaceResult, explain, load_image
from detector.faces import Face
from detector.model import create_model, load_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


def medians_ms(functions: dict, repeats: int, rounds: int = 3, warmup: int = 2) -> dict:
    """Median milliseconds of each function over `repeats` calls. The calls come in blocks, one block per function
    in turn, `rounds` times over: each path runs warm (its own steady state, as when it is called alone) and a
    drift in the machine's speed during the run weighs on all of them alike, so their ratios hold."""
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            for _ in range(warmup):
                fn()
            for _ in range(max(1, repeats // rounds)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def test_jpeg(side: int = 1024) -> bytes:
    """A real face photo scaled to side×side and saved as JPEG, the size phones send after resizing."""
    image = Image.open(EXAMPLES[0]).convert("RGB").resize((side, side), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bench_forward(detector: Detector, plain: torch.nn.Module, jpeg: bytes, repeats: int, faces: bool = True) -> dict:
    """The reference (a plain fp32 forward of a fresh copy of the model, pixels ready) vs our analyze paths."""
    pixels = detector.preprocess(load_image(jpeg))[None].to(detector.device)

    def forward():
        with torch.inference_mode():
            plain(pixels).softmax(-1)

    paths = {
        "forward_ms": forward,
        # bytes → validated image → probabilities + CAM → the three rendered pictures
        "analyze_ms": lambda: detector.analyze(jpeg, faces=False).render(),
    }
    if faces:
        paths["analyze_faces_ms"] = lambda: detector.analyze(jpeg, faces=True).render()
    return medians_ms(paths, repeats)


def bench_baseline(detector: Detector, baseline: Detector, jpeg: bytes, repeats: int) -> dict:
    """analyze (whole image, and with face search) of this model and of `baseline`, in alternating blocks of one
    `medians_ms` call so that both see the same machine: the before/after ratio of a model change."""
    timings = medians_ms({
        "baseline_analyze_ms": lambda: baseline.analyze(jpeg, faces=False).render(),
        "paired_analyze_ms": lambda: detector.analyze(jpeg, faces=False).render(),
        "baseline_analyze_faces_ms": lambda: baseline.analyze(jpeg, faces=True).render(),
        "paired_analyze_faces_ms": lambda: detector.analyze(jpeg, faces=True).render(),
    }, repeats)
    return {**timings, "baseline_input_size": list(baseline.preprocess.config["input_size"]),
            "analyze_over_baseline": timings["paired_analyze_ms"] / timings["baseline_analyze_ms"],
            "analyze_faces_over_baseline": timings["paired_analyze_faces_ms"] / timings["baseline_analyze_faces_ms"]}


def load_finder_module(path: Path):
    """A Python file with find_faces(image) → boxes and crop_box(box, size, margin): an earlier face finder (e.g. the
    Haar cascades: git show ff30132:detector/faces.py > old_faces.py)."""
    spec = importlib.util.spec_from_file_location("baseline_faces", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def bench_baseline_finder(detector: Detector, module, jpeg: bytes, repeats: int) -> dict:
    """analyze with face search through this finder and through an earlier one, same model, alternating blocks: the
    earlier path finds its boxes, crops each as it did (its crop_box, the model's margin), judges the crops in one
    batch and renders the picture, as the detector did with it."""
    def earlier():
        image = load_image(jpeg)
        boxes = module.find_faces(image)
        crops = [module.crop_box(box, image.size, detector.face_margin) for box in boxes]
        analyses = detector.analyze_batch([image.crop(crop) for crop in crops] or [image], faces=False)
        if boxes:
            found = [FaceResult(Face(tuple(box), ((0.0, 0.0),) * 5, 1.0), crop, analysis)
                     for box, crop, analysis in zip(boxes, crops, analyses)]
            return Analysis.of_faces(image, found).render()
        return analyses[0].render()

    image = load_image(jpeg)
    timings = medians_ms({
        "baseline_finder_analyze_faces_ms": earlier,
        "finder_paired_analyze_faces_ms": lambda: detector.analyze(jpeg, faces=True).render(),
        "baseline_finder_ms": lambda: module.find_faces(image),
        "finder_ms": lambda: detector.find_faces(image),
    }, repeats)
    return {**timings, "analyze_faces_over_baseline_finder":
            timings["finder_paired_analyze_faces_ms"] / timings["baseline_finder_analyze_faces_ms"]}


def bench_at_224(detector: Detector, jpeg: bytes, repeats: int) -> dict:
    """forward and analyze for the same architecture (and model_args) at 224 px, the resolution of the project's
    spec (random weights: speed does not depend on them)."""
    from training.train import save_model_folder

    config = detector.loaded.config
    model_args = {key: value for key, value in config.get("model_args", {}).items() if key != "num_classes"}
    with tempfile.TemporaryDirectory() as folder:
        save_model_folder(create_model(config["architecture"], img_size=224, **model_args), Path(folder, "model"), {})
        detector = Detector.from_pretrained(Path(folder, "model"))
        plain = load_model(Path(folder, "model")).model.to(detector.device).eval()
        timings = bench_forward(detector, plain, jpeg, repeats, faces=False)
    return {f"{name[:-3]}_224px_ms": value for name, value in timings.items()}


def bench_textbook_gradcam(detector: Detector, plain: torch.nn.Module, jpeg: bytes, repeats: int) -> float:
    """The naive app: fp32 probabilities, then pytorch-grad-cam's GradCAM on the last stage (hooks + full
    backward, a second forward), with our rendering."""
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(model=plain, target_layers=[plain.get_submodule(plain.feature_info[-1]["module"])])

    def textbook():
        image = load_image(jpeg)
        pixels = detector.preprocess(image)[None].to(detector.device)
        with torch.no_grad():
            plain(pixels).softmax(-1)  # the probabilities, as the naive app computes them
        grayscale = cam(input_tensor=pixels, targets=None)[0]
        heat = explain.heatmap(explain.activation_map(grayscale, (0, 0, image.width, image.height), image.size))
        explain.overlay(image, heat)

    return medians_ms({"textbook": textbook}, repeats)["textbook"]


def bench_api(detector: Detector, jpeg: bytes, repeats: int) -> dict:
    """End to end through gradio_client against the app on localhost: whole image, and with face search."""
    import app as app_module
    from gradio_client import Client, handle_file

    demo = app_module.build_demo(detector)
    _, url, _ = app_module.launch(demo, prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "face.jpg"
        path.write_bytes(jpeg)
        result = medians_ms({
            "api_client_ms": lambda: client.predict(handle_file(str(path)), True, api_name="/analyze"),
            "api_client_faces_ms": lambda: client.predict(handle_file(str(path)), api_name="/analyze"),
        }, repeats)
    demo.close()
    return result


def bench_cli(detector: Detector, model: str, count: int) -> dict:
    """The CLI over a folder of `count` photos: images/s of its batch loop (`detector.cli.analyze_files`, warm, in
    this process) at --batch-size 16 vs 1, with face search (the default) and with --whole-image; and the
    start-up of a fresh `python -m detector` process (imports, model load), which batching cannot change."""
    from detector.cli import analyze_files, expand

    with tempfile.TemporaryDirectory() as folder:
        for i in range(count):
            Path(folder, f"{i:03d}.jpg").write_bytes(EXAMPLES[i % len(EXAMPLES)].read_bytes())
        inputs = list(expand([folder]))
        rates = {}
        for mode, faces in (("", True), ("whole_", False)):
            for batch in (16, 1):
                analyze_files(detector, inputs[:batch], batch, None, faces)  # warm this batch shape
                start = time.perf_counter()
                analyze_files(detector, inputs, batch, None, faces)
                rates[f"cli_{mode}batch{batch}_images_per_s"] = count / (time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "detector", inputs[0][0], "--model", model, "--json"],
                       check=True, capture_output=True)
        rates["cli_one_image_process_s"] = time.perf_counter() - start
    return rates


def bench_app_memory(model: str, requests: int) -> dict:
    """RSS of `python app.py` (its own process) after half and all of `requests` analyses."""
    import psutil
    from gradio_client import Client, handle_file

    port = 7900 + os.getpid() % 50
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        for _ in range(240):  # start-up: imports, model, warm-up
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                time.sleep(0.5)
        process, rss = psutil.Process(server.pid), {}
        for i in range(1, requests + 1):
            client.predict(handle_file(str(EXAMPLES[i % len(EXAMPLES)])), api_name="/analyze")
            if i in (requests // 2, requests):
                rss[i] = process.memory_info().rss / 2**20
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {f"app_rss_mb_after_{requests // 2}": rss[requests // 2], f"app_rss_mb_after_{requests}": rss[requests]}


def bench_training(steps: int, img_size: int) -> float:
    """Images/s of the training loop (training.train, the bundled recipe's settings) for a few steps on CPU."""
    from training import train

    with tempfile.TemporaryDirectory() as folder:
        for label in ("real", "fake"):
            Path(folder, "data", label).mkdir(parents=True)
            for i in range(32):
                Path(folder, "data", label, f"{i}.jpg").write_bytes(EXAMPLES[i % len(EXAMPLES)].read_bytes())
        train.main(["--dataset", str(Path(folder, "data")), "--output-dir", str(Path(folder, "run")),
                    "--img-size", str(img_size), "--optimizer", "adamw", "--lr", "1.5e-3", "--scheduler", "cosine",
                    "--epochs", "1", "--batch-size", "16", "--max-steps-per-epoch", str(steps), "--workers", "1",
                    "--aug-strength", "0.7", "--val-fraction", "0.25"])
        log = json.loads(Path(folder, "run", "metrics.jsonl").read_text().splitlines()[-1])
    return log["train_images_per_s"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or Hub id (default: $DETECTOR_MODEL or the bundled model)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", metavar="MODEL",
                        help="another model folder or Hub id whose forward and analyze paths are timed in the same run "
                             "(keys baseline_*), e.g. the previous bundled model")
    parser.add_argument("--baseline-finder", type=Path, metavar="FILE",
                        help="an earlier face finder (a Python file with find_faces and crop_box) whose analyze with "
                             "face search is timed beside this one's, same model, same run (keys baseline_finder_*)")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 30
    detector = Detector.from_pretrained(args.model)
    jpeg = test_jpeg()
    results = {"device": str(detector.device), "threads": torch.get_num_threads(), "model": detector.name,
               "calls_per_median": 3 * max(1, repeats // 3),
               "input_size": list(detector.preprocess.config["input_size"]), "image": "1024x1024 JPEG"}
    plain = load_model(detector.loaded.folder).model.to(detector.device).eval()  # fp32, as loaded
    results.update(bench_forward(detector, plain, jpeg, repeats))
    if args.baseline:
        results.update(bench_baseline(detector, Detector.from_pretrained(args.baseline), jpeg, repeats))
        results["baseline_model"] = args.baseline
    if args.baseline_finder:
        results.update(bench_baseline_finder(detector, load_finder_module(args.baseline_finder), jpeg, repeats))
        results["baseline_finder"] = str(args.baseline_finder)
    results["analyze_faces_over_analyze"] = results["analyze_faces_ms"] / results["analyze_ms"]
    results.update(bench_at_224(detector, jpeg, repeats))
    results["textbook_gradcam_ms"] = bench_textbook_gradcam(detector, plain, jpeg, repeats)
    results.update(bench_api(detector, jpeg, repeats))
    results.update(bench_cli(detector, str(detector.loaded.folder), 16 if args.quick else 64))
    results.update(bench_app_memory(str(detector.loaded.folder), 20 if args.quick else 100))
    results["train_images_per_s"] = bench_training(3 if args.quick else 8, detector.preprocess.config["input_size"][-1])
    results["analyze_over_forward"] = results["analyze_ms"] / results["forward_ms"]
    results["analyze_over_forward_224px"] = results["analyze_224px_ms"] / results["forward_224px_ms"]
    results["textbook_over_analyze"] = results["textbook_gradcam_ms"] / results["analyze_ms"]
    results["api_minus_forward_ms"] = results["api_client_ms"] - results["forward_ms"]
    results["cli_batch_speedup"] = results["cli_batch16_images_per_s"] / results["cli_batch1_images_per_s"]
    results["cli_whole_batch_speedup"] = results["cli_whole_batch16_images_per_s"] / results["cli_whole_batch1_images_per_s"]
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    print_results(results)
    return results


if __name__ == "__main__":
    main()
